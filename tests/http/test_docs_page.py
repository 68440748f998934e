"""The interactive API docs at /v2/docs: Swagger UI served from a package (no CDN) on the server's own
OpenAPI document, every front-end that is on listed, and "try it out" on add_sub's infer answering from the
page, in a real browser (Debian's Chromium driven by Playwright)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.conftest import serve_in_process, serve_in_thread
from v2serve.engine.loader import models_from_target

pytestmark = pytest.mark.anyio

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ADD_SUB = {
    "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": list(range(16))},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16},
    ]
}


async def test_the_page_and_its_files_are_served_from_the_package():
    async with serve_in_process(*models_from_target("examples/add_sub")) as client:
        page = await client.get("/v2/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'src="docs/swagger-ui-bundle.js"' in page.text and 'url: "docs/openapi.json"' in page.text
        assert "http://" not in page.text and "https://" not in page.text  # nothing from outside the machine
        script = await client.get("/v2/docs/swagger-ui-bundle.js")
        assert script.status_code == 200 and "SwaggerUIBundle" in script.text
        assert script.headers["content-type"].startswith("text/javascript")
        assert (await client.get("/v2/docs/swagger-ui.css")).headers["content-type"].startswith("text/css")
        for other in ("/v2/docs/index.html", "/v2/docs/..%2f..%2fsettings.py", "/v2/docs/LICENSE"):
            assert (await client.get(other)).status_code == 404, other


async def test_the_document_lists_every_front_end_that_is_on_and_the_page_can_be_turned_off():
    async with serve_in_process(*models_from_target("examples/add_sub")) as client:
        paths = (await client.get("/v2/docs/openapi.json")).json()["paths"]
    assert {"/v2/models/{model}/infer", "/predictions/{model}", "/v1/models/{model}:predict", "/embed"} <= set(paths)
    async with serve_in_process(frontends={"docs": False, "torchserve": False}) as client:
        assert (await client.get("/v2/docs")).status_code == 404
        assert "/predictions/{model}" not in (await client.get("/v2/docs/openapi.json")).json()["paths"]


def test_try_it_out_on_add_sub_infer_answers_in_a_real_browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("V2SERVE_REQUIRE_BROWSER"):
            pytest.fail(f"no browser at {CHROMIUM}: .ci/run installs Debian's chromium")
        pytest.skip("no Chromium here (apt-get install chromium); CI installs it and runs this test")
    from playwright.sync_api import sync_playwright

    with serve_in_thread(*models_from_target("examples/add_sub")) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{url}/v2/docs")
            infer = '.opblock-post .opblock-summary-path[data-path="/v2/models/{model}/infer"]'
            page.locator(infer).first.click()
            operation = page.locator(".opblock-post.is-open").first
            operation.locator("button.try-out__btn").click()
            operation.locator('tr[data-param-name="model"] input').fill("add_sub")
            operation.locator("textarea.body-param__text").fill(json.dumps(ADD_SUB))
            operation.locator("button.execute").click()
            status = operation.locator(".live-responses-table .response .response-col_status").first
            status.wait_for(timeout=30_000)
            code = status.inner_text().strip()
            shown = operation.locator(".live-responses-table .response-col_description pre").first.inner_text()
        finally:
            browser.close()
    assert code == "200", shown
    answer = json.loads(shown)
    assert answer["model_name"] == "add_sub"
    outputs = {output["name"]: output["data"] for output in answer["outputs"]}
    assert outputs["OUTPUT0"] == [i + 1 for i in range(16)] and outputs["OUTPUT1"] == [i - 1 for i in range(16)]
