# The PostgreSQL 16 + pgvector container the VM test runs the images against, as the
# project promises (a database reached by name over a Docker network, like RDS). Only
# checks build it; the project does not ship it.
#
# Entrypoint: on an empty data directory, initdb (superuser `postgres`, peer auth on the
# socket, scram-sha-256 over TCP), then, on a server listening on the socket only, the
# init step an administrator runs once on RDS: the application role with
# $POSTGRES_PASSWORD, its database and `CREATE EXTENSION vector`. Then the real server on
# TCP 5432 as PID 1 (StopSignal SIGINT: PostgreSQL's fast shutdown). Unlike the two
# project images it has /bin/sh: initdb and pg_ctl start their child processes through it.
#
# Returns { image, entrypoint }. Besides checks.<system>.vm, checks.<system>.pgvector-image
# builds the image and checks.<system>.shell-scripts lints the entrypoint, so runners
# without KVM build both too, and the offline evaluator (which does not look inside a NixOS
# test) reaches their scripts.
{ pkgs, lib }:
let
  uid = 999;
  postgresql = pkgs.postgresql_16.withPackages (ps: [ ps.pgvector ]);
  data = "/var/lib/postgresql/data";

  nss = pkgs.fakeNss.override {
    extraPasswdLines = [
      "postgres:x:${toString uid}:${toString uid}:PostgreSQL:/var/lib/postgresql:/noshell"
    ];
    extraGroupLines = [ "postgres:x:${toString uid}:" ];
  };

  entrypoint = pkgs.writeShellApplication {
    name = "pgvector-entrypoint";
    runtimeInputs = [
      postgresql
      pkgs.coreutils
    ];
    text = ''
      : "''${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD, the password of the application role}"
      user=''${POSTGRES_USER:-wcu}
      db=''${POSTGRES_DB:-wcu}
      export PGDATA=${data}
      if [[ ! -s $PGDATA/PG_VERSION ]]; then
        initdb --username=postgres --auth-local=peer --auth-host=scram-sha-256 \
          --encoding=UTF8 --locale=C
        echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
        pg_ctl --wait --options="-c listen_addresses= -c unix_socket_directories=/tmp" start
        psql --host=/tmp --username=postgres --dbname=postgres -v ON_ERROR_STOP=1 \
          -v user="$user" -v password="$POSTGRES_PASSWORD" -v db="$db" <<'SQL'
      CREATE ROLE :"user" LOGIN PASSWORD :'password';
      CREATE DATABASE :"db" OWNER :"user";
      SQL
        psql --host=/tmp --username=postgres --dbname="$db" -v ON_ERROR_STOP=1 \
          -c 'CREATE EXTENSION vector'
        pg_ctl --wait --mode=fast stop
      fi
      exec postgres -c listen_addresses='*' -c unix_socket_directories=/tmp
    '';
  };
in
{
  inherit entrypoint;
  image = pkgs.dockerTools.buildLayeredImage {
    name = "wcu-ai-test-pgvector";
    tag = "16";
    contents = [
      nss
      pkgs.dockerTools.binSh
    ];
    extraCommands = ''
      mkdir -m 1777 tmp
    '';
    fakeRootCommands = ''
      mkdir -p .${data}
      chmod 700 .${data}
      chown -R ${toString uid}:${toString uid} ./var/lib/postgresql
    '';
    config = {
      User = "${toString uid}:${toString uid}";
      Entrypoint = [ (lib.getExe entrypoint) ];
      Env = [
        "PATH=${postgresql}/bin"
        "LANG=C.UTF-8"
      ];
      ExposedPorts."5432/tcp" = { };
      StopSignal = "SIGINT";
    };
  };
}
