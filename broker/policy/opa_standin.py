"""A small server speaking OPA's REST Data API, evaluating with the embedded engine.

No OPA binary can be installed on the development machines, so the tests and the benchmark
exercise the OPA-server path (opa-python-client, HTTP, pushed modules) against this stand-in;
docker-compose runs the real OPA. Endpoints: PUT/GET/DELETE /v1/policies/{id}, GET /v1/policies,
PUT/GET/DELETE /v1/data/{path}, POST /v1/data/{path} with {"input": ...}.
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class RegoStore:
    def __init__(self):
        self.modules: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        self._interpreter = None
        self._lock = threading.Lock()

    def _build(self, modules: dict[str, str]):
        from regopy import Interpreter

        interpreter = Interpreter()
        for module_id, rego in modules.items():
            interpreter.add_module(module_id + ".rego", rego)
        if self.data:
            interpreter.add_data(self.data)
        interpreter.set_input({})
        interpreter.query("data")  # compile everything now, like OPA does on PUT
        return interpreter

    def put_module(self, module_id: str, rego: str) -> None:
        with self._lock:
            candidate = {**self.modules, module_id: rego}
            self._interpreter = self._build(candidate)  # raises on a compile error: nothing stored
            self.modules = candidate

    def delete_module(self, module_id: str) -> bool:
        with self._lock:
            if self.modules.pop(module_id, None) is None:
                return False
            self._interpreter = self._build(self.modules) if self.modules else None
            return True

    def put_data(self, path: str, value: Any) -> None:
        with self._lock:
            node = self.data
            parts = [p for p in path.split("/") if p]
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            if parts:
                node[parts[-1]] = value
            else:
                self.data = value
            self._interpreter = self._build(self.modules) if self.modules else None

    def query(self, path: str, input_doc: Any) -> Any:
        with self._lock:
            if self._interpreter is None:
                return None
            self._interpreter.set_input(input_doc if input_doc is not None else {})
            dotted = ".".join(p for p in path.split("/") if p)
            output = self._interpreter.query("data" + (f".{dotted}" if dotted else ""))
        return output.results[0].expressions[0] if output.results else None


def create_opa_standin() -> FastAPI:
    app = FastAPI(title="OPA REST API stand-in (embedded rego-cpp)")
    store = RegoStore()

    @app.get("/health")
    def health():
        return {}

    @app.get("/v1/policies")
    @app.get("/v1/policies/")
    def list_policies():
        return {"result": [{"id": k, "raw": v} for k, v in store.modules.items()]}

    @app.put("/v1/policies/{module_id:path}")
    async def put_policy(module_id: str, request: Request):
        try:
            store.put_module(module_id, (await request.body()).decode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - mirror OPA's 400 on compile errors
            return JSONResponse({"code": "invalid_parameter", "message": f"error(s) occurred while compiling "
                                 f"module(s): {str(exc)[:500]}"}, status_code=400)
        return {}

    @app.get("/v1/policies/{module_id:path}")
    def get_policy(module_id: str):
        if module_id not in store.modules:
            return JSONResponse({"code": "resource_not_found", "message": "storage_not_found_error"}, 404)
        return {"result": {"id": module_id, "raw": store.modules[module_id]}}

    @app.delete("/v1/policies/{module_id:path}")
    def delete_policy(module_id: str):
        if not store.delete_module(module_id):
            return JSONResponse({"code": "resource_not_found", "message": "storage_not_found_error"}, 404)
        return {}

    @app.put("/v1/data/{path:path}", status_code=204)
    async def put_data(path: str, request: Request):
        store.put_data(path, await request.json())

    @app.get("/v1/data/{path:path}")
    def get_data(path: str):
        result = store.query(path, None)
        return {} if result is None else {"result": result}

    @app.post("/v1/data/{path:path}")
    async def post_data(path: str, request: Request):
        body = await request.json() if await request.body() else {}
        try:
            result = store.query(path, body.get("input"))
        except Exception as exc:  # noqa: BLE001 - OPA returns 500 on evaluation errors
            return JSONResponse({"code": "internal_error", "message": str(exc)[:300]}, status_code=500)
        return {} if result is None else {"result": result}

    return app
