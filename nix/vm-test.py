# NixOS test-driver script (Python). nix/vm-test.nix prepends:
#   api_image, runner_image  image tarballs (docker load --input)
#   api_ref, runner_ref      name:tag of the loaded images
#   fixtures                 directory with sample.pdf and sample.docx
import json

api_key = "vm-test-key-0123456789abcdef"
db_password = "vm-test-password"
database_url = f"postgresql://wcu:{db_password}@127.0.0.1:5432/wcu"
api = "http://127.0.0.1:8000"
auth = f"-H 'Authorization: Bearer {api_key}'"

start_all()

with subtest("PostgreSQL 16 with pgvector"):
    machine.wait_for_unit("postgresql.service")
    machine.wait_for_open_port(5432)
    # What an administrator does once on RDS (rds_superuser): role, database, extension.
    machine.succeed(
        "runuser -u postgres -- psql -v ON_ERROR_STOP=1 -c "
        f"\"CREATE ROLE wcu LOGIN PASSWORD '{db_password}'\"",
        "runuser -u postgres -- psql -v ON_ERROR_STOP=1 -c 'CREATE DATABASE wcu OWNER wcu'",
        "runuser -u postgres -- psql -v ON_ERROR_STOP=1 -d wcu -c 'CREATE EXTENSION vector'",
    )

with subtest("load both images"):
    machine.wait_for_unit("sockets.target")
    machine.succeed(
        f"docker load --input={runner_image}",
        f"docker load --input={api_image}",
    )

with subtest("runner first: Agno tables, then migrations"):
    machine.succeed(f"docker run -d --name runner --network=host -e DATABASE_URL={database_url} {runner_ref}")
    machine.wait_until_succeeds(
        "runuser -u postgres -- psql -d wcu -tAc "
        "\"SELECT 1 FROM information_schema.tables WHERE table_name = 'ai_migrations'\" | grep -q 1",
        timeout=300,
    )
    machine.succeed("test \"$(docker inspect -f '{{.State.Running}}' runner)\" = true")

with subtest("API: liveness and readiness"):
    machine.succeed(
        "docker run -d --name api --network=host "
        f"-e DATABASE_URL={database_url} -e WCU_API_KEYS={api_key} "
        f"-e WCU_API_HOST=127.0.0.1 -e WCU_API_PORT=8000 {api_ref}"
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


with subtest("upload a PDF and a DOCX and wait until both are parsed"):
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
