"""A small server speaking OPA's REST Data API, evaluating with the embedded engine (rego-cpp).

No OPA binary can be installed on the development machines, so the tests and the benchmark
exercise the OPA-server path (opa-python-client 3.x, HTTP, pushed modules and data) against this
stand-in; docker-compose runs the real OPA. It implements what opa-python-client calls:

    PUT    /v1/policies/{id}   text/plain Rego -> 200 {} | 400 {code, message, errors[]}
    GET    /v1/policies/{id}   -> 200 {"result": {"id", "raw"}} | 404
    DELETE /v1/policies/{id}   -> 200 {} | 404
    GET    /v1/policies/       -> 200 {"result": [{"id", "raw"}, ...]}
    PUT    /v1/data/{path}     JSON document -> 204
    GET    /v1/data/{path}     -> 200 {"result": ...} or {} when undefined
    POST   /v1/data/{path}     {"input": ...} -> 200 {"result": ...} or {} | 500 on evaluation errors
    DELETE /v1/data/{path}     -> 204 | 404
    GET    /health             -> 200 {}
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse


class RegoStore:
    """Modules and base data; a compiled bundle per queried path, rebuilt after every change."""

    def __init__(self):
        self.modules: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        self._compiled: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def _interpreter(self, modules: dict[str, str], data: dict[str, Any]):
        from regopy import Interpreter

        interpreter = Interpreter()
        for module_id, rego in modules.items():
            interpreter.add_module(module_id + ".rego", rego)
        if data:
            interpreter.add_data(data)
        return interpreter

    def _check(self, modules: dict[str, str], data: dict[str, Any]) -> None:
        """Compile everything now, like OPA does on PUT; raise on an error (nothing is stored)."""
        from regopy.rego_shared import rego_output_ok

        interpreter = self._interpreter(modules, data)
        interpreter.set_input({})
        output = interpreter.query("data")
        if not rego_output_ok(output._impl):
            raise ValueError(str(output).strip())

    def put_module(self, module_id: str, rego: str) -> None:
        with self._lock:
            candidate = {**self.modules, module_id: rego}
            self._check(candidate, self.data)
            self.modules, self._compiled = candidate, {}

    def delete_module(self, module_id: str) -> bool:
        with self._lock:
            if module_id not in self.modules:
                return False
            self.modules = {k: v for k, v in self.modules.items() if k != module_id}
            self._compiled = {}
            return True

    def put_data(self, path: str, value: Any) -> None:
        with self._lock:
            data = copy.deepcopy(self.data)
            parts = [p for p in path.split("/") if p]
            if not parts:
                data = value
            else:
                node = data
                for part in parts[:-1]:
                    node = node.setdefault(part, {})
                node[parts[-1]] = value
            self.data, self._compiled = data, {}

    def delete_data(self, path: str) -> bool:
        with self._lock:
            parts = [p for p in path.split("/") if p]
            node = self.data
            for part in parts[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
            if not parts or not isinstance(node, dict) or parts[-1] not in node:
                return False
            data = copy.deepcopy(self.data)
            node = data
            for part in parts[:-1]:
                node = node[part]
            del node[parts[-1]]
            self.data, self._compiled = data, {}
            return True

    def query(self, path: str, input_doc: Any) -> Any:
        from regopy.rego_shared import rego_output_ok

        dotted = ".".join(p for p in path.split("/") if p)
        query = "data" + (f".{dotted}" if dotted else "")
        with self._lock:
            compiled = self._compiled.get(query)
            if compiled is None:
                interpreter = self._interpreter(self.modules, self.data)
                compiled = self._compiled[query] = (interpreter, interpreter.build(query))
            interpreter, bundle = compiled
            interpreter.set_input(input_doc if input_doc is not None else {})
            output = interpreter.query_bundle(bundle)
        if not rego_output_ok(output._impl):
            raise RuntimeError(str(output).strip())
        return output.results[0].expressions[0] if output.results and output.results[0].expressions else None


def create_opa_standin() -> FastAPI:
    app = FastAPI(title="OPA REST API stand-in (embedded rego-cpp)")
    store = RegoStore()
    app.state.store = store

    def not_found(what: str) -> JSONResponse:
        return JSONResponse({"code": "resource_not_found", "message": f"storage_not_found_error: {what}"}, 404)

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
        except Exception as exc:  # noqa: BLE001 - OPA answers 400 on parse/compile errors
            message = str(exc)[:500]
            return JSONResponse({"code": "invalid_parameter", "message": "error(s) occurred while compiling module(s)",
                                 "errors": [{"code": "rego_compile_error", "message": message,
                                             "location": {"file": module_id}}]}, status_code=400)
        return {}

    @app.get("/v1/policies/{module_id:path}")
    def get_policy(module_id: str):
        if module_id not in store.modules:
            return not_found(module_id)
        return {"result": {"id": module_id, "raw": store.modules[module_id]}}

    @app.delete("/v1/policies/{module_id:path}")
    def delete_policy(module_id: str):
        if not store.delete_module(module_id):
            return not_found(module_id)
        return {}

    @app.put("/v1/data/{path:path}")
    async def put_data(path: str, request: Request):
        try:
            value = await request.json()
        except ValueError:
            return JSONResponse({"code": "invalid_parameter", "message": "body must be JSON"}, status_code=400)
        store.put_data(path, value)
        return Response(status_code=204)

    @app.delete("/v1/data/{path:path}")
    def delete_data(path: str):
        if not store.delete_data(path):
            return not_found(path)
        return Response(status_code=204)

    @app.get("/v1/data/{path:path}")
    def get_data(path: str):
        try:
            result = store.query(path, None)
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"code": "internal_error", "message": str(exc)[:300]}, status_code=500)
        return {} if result is None else {"result": result}

    @app.post("/v1/data/{path:path}")
    async def post_data(path: str, request: Request):
        raw = await request.body()
        try:
            body = await request.json() if raw else {}
        except ValueError:
            return JSONResponse({"code": "invalid_parameter", "message": "body must be JSON"}, status_code=400)
        try:
            result = store.query(path, body.get("input") if isinstance(body, dict) else None)
        except Exception as exc:  # noqa: BLE001 - OPA answers 500 on evaluation errors
            return JSONResponse({"code": "internal_error", "message": str(exc)[:300]}, status_code=500)
        return {} if result is None else {"result": result}

    return app
