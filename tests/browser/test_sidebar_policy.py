"""The sidebar's Content-Security-Policy, as chromium applies it.

Every test of tests/browser fails on anything the policy refuses (tests/browser/harness.py
records the console's CSP reports), so the page, its WebSocket included, is known to work
under it; here, that the policy is really in force: a script injected into the page does
not run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from cti.screenpop.security import CONTENT_SECURITY_POLICY
from tests.browser.harness import Backend

if TYPE_CHECKING:
    from playwright.async_api import Browser

pytestmark = pytest.mark.browser

_INJECT = """(kind) => new Promise((resolve) => {
  document.addEventListener("securitypolicyviolation",
    (event) => resolve(event.effectiveDirective), { once: true });
  if (kind === "inline") {
    const script = document.createElement("script");
    script.textContent = "window.injected = true";
    document.body.append(script);
  } else if (kind === "style") {
    document.body.setAttribute("style", "background: red");
  } else {
    const script = document.createElement("script");
    script.src = "http://127.0.0.2:9/evil.js";
    document.body.append(script);
  }
})"""


@pytest.mark.parametrize(
    ("kind", "directive"),
    [("inline", "script-src-elem"), ("style", "style-src-attr"), ("remote", "script-src-elem")],
)
async def test_the_policy_stops_what_an_injection_would_add(
    browser: Browser, backend: Backend, kind: str, directive: str
) -> None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        response = await page.goto(backend.url)
        assert response is not None
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert await page.evaluate(_INJECT, kind) == directive
        assert await page.evaluate("window.injected") is None
    finally:
        await context.close()
