from wcu_ai.cli import main

main()
