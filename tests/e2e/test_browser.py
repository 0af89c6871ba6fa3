"""The lab's site in a real browser: Debian's headless Chromium, driven by Selenium, walks a new
user through the local lab (sign up, sign in, products, an order, stock running out, orders,
notifications, sign out) and fails on any error the browser logs."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

import pytest

from .conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1000,800",
)
# The screenshots in docs/ are refreshed only on request (MSCTL_UPDATE_SCREENSHOTS=1): every
# run saves its own under the test's tmp dir, and a test run must not change the repository.
SCREENSHOTS = ROOT / "docs" / "screenshots"
UPDATE_DOCS = os.environ.get("MSCTL_UPDATE_SCREENSHOTS") == "1"
PRODUCT = "Sample Product 1"  # seeded by the products service
# Console lines the walk causes on purpose: Chromium logs every HTTP error a fetch gets.
EXPECTED_ERRORS = tuple(
    re.compile(rf"/api/{path} - Failed to load resource: .* {status}")
    for path, status in (("auth/login", r"401 \(Unauthorized\)"), ("orders", r"409 \(Conflict\)"))
)


def require_browser() -> None:
    """Skip (locally) or fail (in CI, where .ci/run installs it) without the browser."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if not missing:
        return
    reason = f"no browser to test the site with: {', '.join(missing)} missing (apt-get install -y chromium chromium-driver)"
    if "CI" in os.environ:  # CI installs the browser (.ci/chromium.sh): missing is a failure
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def browser(tmp_path):
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


class Site:
    """The page as a person uses it, plus screenshots and the browser's console log."""

    def __init__(self, driver, shots: Path):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.by, self.shots = driver, By, shots
        self.wait = WebDriverWait(driver, 20)
        self.console: list[dict] = []
        shots.mkdir(parents=True, exist_ok=True)

    def find(self, css: str):
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def all(self, css: str) -> list:
        return self.driver.find_elements(self.by.CSS_SELECTOR, css)

    def shown(self, css: str) -> bool:
        return self.find(css).is_displayed()

    def until(self, check, what: str):
        return self.wait.until(lambda _: check(), message=what)

    def text(self, css: str) -> str:
        return self.find(css).text

    def wait_text(self, css: str, needle: str) -> str:
        self.until(lambda: needle in self.text(css), f"{css} never said {needle!r}")
        return self.text(css)

    def message(self, needle: str) -> str:
        text = self.wait_text("#message", needle)
        assert not text.lstrip().startswith(("{", "[")), f"raw JSON shown: {text}"
        return text

    def fill(self, css: str, value: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(value)

    def focused_id(self) -> str:
        return self.driver.switch_to.active_element.get_attribute("id")

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))
        if UPDATE_DOCS:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.shots / f"{name}.png", SCREENSHOTS / f"{name}.png")
        self.console += self.driver.get_log("browser")

    def errors(self) -> list[str]:
        self.console += self.driver.get_log("browser")
        lines = [f"{e['level']} {e['message']}" for e in self.console]
        (self.shots / "console.log").write_text("\n".join(lines) + "\n")
        severe = [e["message"] for e in self.console if e["level"] == "SEVERE"]
        return [m for m in severe if not any(p.search(m) for p in EXPECTED_ERRORS)]

    def stock(self) -> int:
        return int(self.text("#detail-stock"))


def test_a_new_user_walks_the_site(browser, local_lab, tmp_path):
    from selenium.webdriver.common.keys import Keys

    url = local_lab.status()["endpoints"]["site"]
    site = Site(browser, tmp_path / "screenshots")
    email = f"walker-{secrets.token_hex(4)}@example.com"
    password = f"pw-{secrets.token_urlsafe(12)}"

    # Signed out: the products, the account forms, no orders or notifications.
    browser.get(url)
    site.wait_text("#products-table", PRODUCT)
    favicon = (
        "return fetch('favicon.svg').then(r => r.status + ' ' + r.headers.get('content-type'))"
    )
    assert browser.execute_script(favicon) == "200 image/svg+xml"
    assert site.shown("#register-form") and site.shown("#login-form")
    assert not site.shown("#my-area") and not site.shown("#logout")
    site.shot("01-signed-out")

    # Sign up: the form is cleared and the sign-in form gets the email.
    site.fill("#register-name", "Walker Test")
    site.fill("#register-email", email)
    site.fill("#register-password", password)
    site.find("#register-form button[type=submit]").click()
    site.message(f"Account created for {email}")
    assert site.find("#register-email").get_attribute("value") == ""
    assert site.find("#login-email").get_attribute("value") == email
    assert site.focused_id() == "login-password"
    site.shot("02-signed-up")

    # A wrong password: the auth service's 401, said plainly; the password field is cleared.
    site.find("#login-password").send_keys("not-the-password", Keys.ENTER)
    assert site.message("Invalid email or password") == "Invalid email or password."
    assert site.find("#login-password").get_attribute("value") == ""
    assert site.focused_id() == "login-password"

    # Sign in with the keyboard: the account forms give way to my orders and notifications.
    site.find("#login-password").send_keys(password, Keys.ENTER)
    site.message("Welcome, Walker Test")
    site.wait_text("#session-status", f"Signed in as Walker Test ({email})")
    assert not site.shown("#register-form") and not site.shown("#login-form")
    assert site.shown("#logout") and site.shown("#my-area")
    site.wait_text("#orders-status", "No orders yet.")
    site.wait_text("#notifications-status", "No notifications yet.")
    site.shot("03-signed-in")

    # The session is in sessionStorage: a reload keeps it.
    stored = browser.execute_script("return sessionStorage.getItem('day21-lab.session')")
    assert '"token"' in stored and email in stored
    browser.refresh()
    site.wait_text("#session-status", f"Signed in as Walker Test ({email})")
    site.wait_text("#products-table", PRODUCT)
    site.wait_text("#orders-status", "No orders yet.")

    # The product's detail view, opened from the list with the keyboard; focus moves to it.
    site.find("#products-table button[data-id]").send_keys(Keys.ENTER)
    site.wait_text("#detail-heading", PRODUCT)
    assert site.focused_id() == "detail-heading"
    assert site.text("#detail-price") == "29.99"
    stock = site.stock()
    assert stock > 3
    site.shot("04-product-detail")

    # Order 2: the stock shown goes down, in the detail and in the list.
    site.fill("#order-quantity", "2")
    site.find("#order-submit").click()
    placed = site.message(f"2 × {PRODUCT}")
    order_id = re.search(r"Order #(\d+) placed", placed).group(1)
    assert f"{stock - 2} left in stock" in placed
    assert site.stock() == stock - 2
    site.wait_text("#products-table tbody", str(stock - 2))
    site.shot("05-ordered")

    # Order more than is left: the orders service's 409 "insufficient stock", said plainly.
    stock -= 2
    site.fill("#order-quantity", str(stock + 1))
    site.find("#order-submit").click()
    short = site.message("Not enough stock")
    assert f"you asked for {stock + 1}, only {stock} left" in short
    assert "error" in site.find("#message").get_attribute("class")
    assert site.focused_id() == "order-quantity" and site.stock() == stock
    site.shot("06-not-enough-stock")

    # Order what is left: sold out, and the order button is disabled.
    site.fill("#order-quantity", str(stock))
    site.find("#order-submit").click()
    site.message("It is now sold out")
    assert site.text("#detail-stock") == "Sold out"
    assert not site.find("#order-submit").is_enabled()
    assert not site.find("#order-quantity").is_enabled()
    assert site.focused_id() == "detail-heading"
    site.shot("07-sold-out")

    # My orders and my notifications show both orders.
    site.wait_text("#orders-table tbody", f"#{order_id}")
    rows = [
        [td.text for td in tr.find_elements(site.by.TAG_NAME, "td")][:4]
        for tr in site.all("#orders-table tbody tr")
    ]
    assert rows[1] == [f"#{order_id}", PRODUCT, "2", "59.98"], rows
    assert rows[0][1:3] == [PRODUCT, str(stock)], rows
    site.wait_text("#notifications-list", f"Order #{order_id} placed: 2 × {PRODUCT}")
    assert len(site.all("#notifications-list li")) == 2
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    assert not site.shown("#detail")
    assert browser.switch_to.active_element.text == PRODUCT  # focus back on what opened it
    browser.execute_script("document.getElementById('my-area').scrollIntoView()")
    site.shot("08-orders-and-notifications")

    # A phone-sized window: one readable column, nothing wider than the screen.
    browser.set_window_size(390, 844)
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 390
    site.shot("09-phone")
    browser.set_window_size(1000, 800)

    # Sign out: the forms are back, empty, and nothing of the user's is left on the page.
    site.find("#logout").click()
    site.message("You are signed out")
    site.wait_text("#session-status", "Not signed in")
    assert site.shown("#register-form") and site.shown("#login-form")
    assert all(f.get_attribute("value") == "" for f in site.all("#account input"))
    assert not site.shown("#my-area") and not site.all("#orders-table tbody tr")
    assert site.focused_id() == "login-email"
    assert browser.execute_script("return sessionStorage.length") == 0
    site.shot("10-signed-out-again")

    assert site.errors() == []
