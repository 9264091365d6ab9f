# The sample PDF and DOCX of the VM test and checks.<system>.runner-tools.
{ pkgs }:
pkgs.runCommand "wcu-ai-fixtures" { nativeBuildInputs = [ pkgs.python3 ]; } ''
  python3 ${./fixtures.py} "$out"
''
