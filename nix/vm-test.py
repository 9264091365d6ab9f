# NixOS test-driver script (Python). nix/vm-test.nix prepends:
#   images                      image tarballs (docker load --input)
#   api_ref, runner_ref, db_ref name:tag of the loaded images
#   fixtures                    directory with sample.pdf and sample.docx
import json
import shlex

api_key = "vm-test-key-0123456789abcdef"
db_password = "vm-test-password"
# The database container by name on the user-defined network, as RDS by its host name.
database_url = f"postgresql://wcu:{db_password}@db:5432/wcu"
api = "http://127.0.0.1:8000"
auth = f"-H 'Authorization: Bearer {api_key}'"


def psql(query):
    """The query run by the database container's superuser over its socket, as a command."""
    return shlex.join(
        ["docker", "exec", "db", "psql", "--host=/tmp", "--username=postgres", "--dbname=wcu", "-tAc", query]
    )


start_all()

with subtest("load the three images"):
    machine.wait_for_unit("sockets.target")
    for image in images:
        machine.succeed(f"docker load --input={image}")
    print(machine.succeed("docker image ls --format 'table {{.Repository}}:{{.Tag}}\\t{{.Size}}'"))
    machine.succeed("docker network create wcu")

with subtest("PostgreSQL 16 with pgvector, in its container"):
    machine.succeed(f"docker run -d --name db --network wcu -e POSTGRES_PASSWORD={db_password} {db_ref}")
    # TCP answers only once the init step is done and the real server runs.
    machine.wait_until_succeeds("docker exec db pg_isready --host=127.0.0.1 --port=5432", timeout=180)
    machine.succeed(psql("SELECT extversion FROM pg_extension WHERE extname = 'vector'") + " | grep -q .")
    # The application role has no superuser rights, as on RDS.
    machine.succeed(psql("SELECT rolsuper FROM pg_roles WHERE rolname = 'wcu'") + " | grep -qx f")

with subtest("runner first, read-only with tmpfs /tmp and /home/app: Agno tables, then migrations"):
    machine.succeed(
        "docker run -d --name runner --network wcu --read-only --tmpfs /tmp --tmpfs /home/app "
        f"-e DATABASE_URL={database_url} {runner_ref}"
    )
    machine.wait_until_succeeds(
        psql("SELECT 1 FROM information_schema.tables WHERE table_name = 'ai_migrations'") + " | grep -q 1",
        timeout=300,
    )
    machine.succeed("test \"$(docker inspect -f '{{.State.Running}}' runner)\" = true")

with subtest("API: liveness and readiness"):
    machine.succeed(
        "docker run -d --name api --network wcu -p 127.0.0.1:8000:8000 "
        f"-e DATABASE_URL={database_url} -e WCU_API_KEYS={api_key} {api_ref}"
    )
    machine.wait_for_open_port(8000)
    machine.wait_until_succeeds(f"curl -sf {api}/health", timeout=120)
    machine.wait_until_succeeds(f"curl -sf {api}/health/ready", timeout=300)
    # without the bearer key the API refuses
    machine.fail(f"curl -sf {api}/v1/documents/00000000-0000-0000-0000-000000000000")


def upload(name, content_type):
    out = machine.succeed(
        f"curl -sf {auth} -F 'file=@{fixtures}/{name};type={content_type}' {api}/v1/documents"
    )
    accepted = json.loads(out)  # 202: {"document_id", "task_id", "status", "duplicate"}
    print(f"uploaded {name}: {accepted}")
    return accepted["document_id"]


def wait_parsed(doc_id):
    machine.wait_until_succeeds(
        f"curl -sf {auth} {api}/v1/documents/{doc_id} | jq -e '.status == \"parsed\"'",
        timeout=600,
    )


with subtest("upload a PDF and a DOCX; the read-only runner parses both"):
    pdf_id = upload("sample.pdf", "application/pdf")
    docx_id = upload(
        "sample.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    )
    wait_parsed(pdf_id)
    wait_parsed(docx_id)

with subtest("graceful stop: SIGTERM, exit code 0"):
    machine.succeed("docker stop --time 60 runner")
    code = machine.succeed("docker inspect -f '{{.State.ExitCode}}' runner").strip()
    assert code == "0", f"runner exited with {code}"
    machine.succeed("docker stop --time 30 api")
    machine.succeed("docker stop --time 30 db")
