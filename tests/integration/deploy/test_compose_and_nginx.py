"""docker-compose.yaml against the Compose Specification schema (vendored by check-jsonschema), and deploy/nginx/nginx.conf (crossplane, NGINX's own parser)."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml
from tests.integration.deploy.deploy_support import REPO, COMPOSE, NGINX_CONF, tool, run


# --- docker-compose.yaml --------------------------------------------------------------------------

def compose_schema() -> dict:
    """The Compose Specification schema as vendored (and kept current) by check-jsonschema.

    docker-compose 1.29.2's compose/config/compose_spec.json dates from 2021: it predates
    `env_file: [{path, required}]` (Compose 2.24) and would reject this file."""
    importlib.import_module("check_jsonschema")
    from importlib.resources import files

    vendored = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    assert vendored.is_file(), "check-jsonschema too old: the compose-spec schema is vendored from 0.32 on"
    return json.loads(vendored.read_text())


def interpolate(value, env: dict[str, str]):
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default} and $$, applied to every string."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, default = match.group(1), match.group(2), match.group(3) or ""
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        return env.get(name, "")

    return re.sub(r"\$\$|\$\{(\w+)(?:(:?-)([^}]*))?\}", repl, value)


def compose_doc(env: dict[str, str] | None = None) -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env or {})


@pytest.mark.parametrize("env", [{}, {"IMAGE": "registry.local/embedding-server:0.1.0", "HOST_PORT": "127.0.0.1:9000",
                                       "CPU_LIMIT": "4", "MEMORY_LIMIT": "8G", "MODEL": "bge-m3"}],
                         ids=["defaults", "overridden"])
def test_compose_validates_against_the_compose_spec(env: dict[str, str]) -> None:
    jsonschema = importlib.import_module("jsonschema")
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose_doc(env))]
    assert not errors, "\n".join(errors)


def test_compose_schema_catches_mistakes() -> None:
    """The schema really is strict (unknown keys, bad env_file entries): a pass above means something."""
    jsonschema = importlib.import_module("jsonschema")
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    doc = compose_doc()
    doc["services"]["embedding-server"]["restrat"] = "always"
    assert list(validator.iter_errors(doc))
    doc = compose_doc()
    doc["services"]["embedding-server"]["env_file"] = [{"path": ".env", "requird": False}]
    assert list(validator.iter_errors(doc))


def test_check_jsonschema_cli_accepts_the_compose_file() -> None:
    check = tool("check-jsonschema")
    done = run([check, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_service_contract() -> None:
    doc = compose_doc()
    service = doc["services"]["embedding-server"]
    assert service["image"] == "embedding-server:latest"
    assert service["build"]["context"] == "."
    assert "profiles" not in service  # the default service starts without any profile
    assert service["restart"] == "unless-stopped"
    assert "./models:/models:ro" in service["volumes"]
    assert "8000:8000" in service["ports"] and "50051:50051" in service["ports"]
    assert service["env_file"] == [{"path": ".env", "required": False}]
    assert service["environment"]["EMBED_HOST"] == "0.0.0.0"
    assert service["environment"]["EMBED_PORT"] == "8000"
    assert service["environment"]["EMBED_GRPC_PORT"] == "50051"
    assert service["environment"]["EMBED_MODELS_DIR"] == "/models"
    limits = service["deploy"]["resources"]["limits"]
    assert limits["cpus"] and limits["memory"]
    assert "/ready" in " ".join(service["healthcheck"]["test"])
    # .env.example documents every variable a user may set; it exists next to the compose file.
    assert (REPO / ".env.example").is_file()


def test_compose_replicas_profile_matches_the_nginx_upstream() -> None:
    crossplane = importlib.import_module("crossplane")
    doc = compose_doc()
    services = doc["services"]
    replica, lb = services["embedding-server-2"], services["lb"]
    assert replica["profiles"] == ["replicas"] and lb["profiles"] == ["replicas"]
    assert replica["image"] == services["embedding-server"]["image"]
    assert "ports" not in replica  # reached through the balancer only
    mounts = [v.split(":") for v in lb["volumes"]]
    assert ["./deploy/nginx/nginx.conf", "/etc/nginx/nginx.conf", "ro"] in mounts
    assert set(lb["depends_on"]) == {"embedding-server", "embedding-server-2"}

    parsed = crossplane.parse(str(NGINX_CONF))
    assert parsed["status"] == "ok", parsed["errors"]
    http = next(d for d in parsed["config"][0]["parsed"] if d["directive"] == "http")["block"]
    upstream = next(d for d in http if d["directive"] == "upstream")
    servers = [d["args"][0] for d in upstream["block"] if d["directive"] == "server"]
    assert sorted(servers) == ["embedding-server-2:8000", "embedding-server:8000"]
    server = next(d for d in http if d["directive"] == "server")["block"]
    listen = next(d for d in server if d["directive"] == "listen")["args"][0]
    assert any(p.endswith(":" + listen) for p in lb["ports"]), (lb["ports"], listen)
    proxied = [d for loc in server if loc["directive"] == "location" for d in loc["block"]
               if d["directive"] == "proxy_pass"]
    assert proxied and proxied[0]["args"] == [f"http://{upstream['args'][0]}"]


def test_nginx_config_errors_are_detected(tmp_path: Path) -> None:
    """crossplane checks directive contexts and arities, not just braces."""
    crossplane = importlib.import_module("crossplane")
    bad = tmp_path / "nginx.conf"
    bad.write_text(NGINX_CONF.read_text().replace("least_conn;", "least_conn; proxy_pass http://x;", 1))
    assert crossplane.parse(str(bad))["status"] == "failed"

