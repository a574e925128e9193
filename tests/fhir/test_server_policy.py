"""FHIR server allowlist: the SSRF defence in front of every outgoing FHIR call."""

from __future__ import annotations

import pytest

from cds_service.fhir.server_policy import (
    FhirServerRefused,
    check_fhir_server,
    is_under_base,
    validate_allowlist,
)

ALLOW = [
    "https://fhir.example.org",
    "https://h.example/fhir",
    "https://ports.example:8443/r4/",
]


def allowed(url: str, allowlist=ALLOW, loopback: bool = False) -> str:
    return check_fhir_server(url, allowlist, allow_loopback_http=loopback)


def refused(url: str, allowlist=ALLOW, loopback: bool = False) -> str:
    with pytest.raises(FhirServerRefused) as info:
        check_fhir_server(url, allowlist, allow_loopback_http=loopback)
    return info.value.reason


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://fhir.example.org", "https://fhir.example.org"),
        ("https://fhir.example.org/", "https://fhir.example.org"),
        ("https://FHIR.Example.ORG/r4/", "https://fhir.example.org/r4"),
        ("HTTPS://fhir.example.org:443/r4", "https://fhir.example.org/r4"),
        ("https://h.example/fhir", "https://h.example/fhir"),
        ("https://h.example/fhir/", "https://h.example/fhir"),
        ("https://h.example/fhir/tenant-a", "https://h.example/fhir/tenant-a"),
        ("https://ports.example:8443/r4", "https://ports.example:8443/r4"),
        ("https://ports.example:8443/r4/sub/", "https://ports.example:8443/r4/sub"),
    ],
)
def test_allowed_urls_are_normalised(url: str, expected: str) -> None:
    assert allowed(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://fhir.example.org.evil.com",  # evil suffix host
        "https://fhir.example.org.evil.com/fhir",
        "https://fhir.example.orgx",  # string-prefix but different host
        "https://evilfhir.example.org",
        "https://h.example/fhir-other",  # path prefix but not on a segment boundary
        "https://h.example/fhirx/Patient",
        "https://h.example/",  # above the allowed path
        "https://h.example/other/fhir",
        "https://fhir.example.org:8443",  # port differs from the default port of the entry
        "https://ports.example/r4",  # entry has 8443, URL uses default 443
        "https://ports.example:9443/r4",
    ],
)
def test_not_on_allowlist_is_refused(url: str) -> None:
    assert "allowlist" in refused(url)


def test_explicit_default_port_in_entry_matches_implicit_port() -> None:
    assert allowed("https://a.example/x", ["https://a.example:443/x"]) == "https://a.example/x"
    assert allowed("https://a.example:443/x", ["https://a.example/x"]) == "https://a.example/x"


def test_http_refused_for_non_loopback_even_when_loopback_http_allowed() -> None:
    assert "https" in refused("http://fhir.example.org", ["*"])
    assert "loopback" in refused("http://fhir.example.org", ["*"], loopback=True)
    assert "loopback" in refused("http://10.0.0.1:8080/fhir", ["*"], loopback=True)
    # Non-canonical IPv4 spellings are not treated as loopback literals.
    assert "loopback" in refused("http://127.1/fhir", ["*"], loopback=True)
    # http to a name that merely contains "localhost" is not loopback.
    assert "loopback" in refused("http://localhost.evil.com/fhir", ["*"], loopback=True)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080/fhir", "http://127.0.0.1:8080/fhir"),
        ("http://127.5.6.7/fhir/", "http://127.5.6.7/fhir"),
        ("http://localhost:9000", "http://localhost:9000"),
        ("http://LOCALHOST:9000/r4", "http://localhost:9000/r4"),
        ("http://[::1]:9000/r4", "http://[::1]:9000/r4"),
    ],
)
def test_http_loopback_allowed_only_with_flag(url: str, expected: str) -> None:
    assert allowed(url, ["*"], loopback=True) == expected
    refused(url, ["*"], loopback=False)


def test_http_loopback_still_needs_the_allowlist() -> None:
    entry = ["http://127.0.0.1:8080/fhir"]
    assert allowed("http://127.0.0.1:8080/fhir", entry, loopback=True).endswith("/fhir")
    assert "allowlist" in refused("http://127.0.0.1:8081/fhir", entry, loopback=True)
    assert "allowlist" in refused("http://localhost:8080/fhir", entry, loopback=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@fhir.example.org",
        "https://user@fhir.example.org",
        "https://fhir.example.org@evil.com",
        "https://evil.com@fhir.example.org",
    ],
)
def test_userinfo_refused(url: str) -> None:
    assert "user info" in refused(url, ["*"])


@pytest.mark.parametrize(
    "url",
    [
        "https://fhir.example.org#frag",
        "https://fhir.example.org/#",
        "https://fhir.example.org/r4?x=1",
        "https://fhir.example.org/r4/../admin",
        "https://fhir.example.org/r4/%2E%2E/admin",
        "https://fhir.example.org/r4/..;/admin",
        "https://fhir.example.org/r4/x%2f..%2fadmin",
        "https://fhir.example.org/./r4",
        "https://fhir.example.org\\@evil.com",
        "https://fhir.example.org\t.evil.com",
        " https://fhir.example.org",
        "https://fhir%2eexample.org",
        "https://fhir.example.org:99999",
        "https://fhir.example.org:abc",
        "ftp://fhir.example.org",
        "file:///etc/passwd",
        "//fhir.example.org",
        "fhir.example.org",
        "https:///r4",
        "",
    ],
)
def test_malformed_or_ambiguous_urls_refused(url: str) -> None:
    refused(url, ["*"])


def test_wildcard_allows_any_https_server() -> None:
    assert allowed("https://anything.example.net/x/", ["*"]) == "https://anything.example.net/x"
    assert allowed("https://10.1.2.3:8443", ["*"]) == "https://10.1.2.3:8443"


def test_empty_allowlist_refuses_everything() -> None:
    assert "empty" in refused("https://fhir.example.org", [])
    assert "empty" in refused("http://127.0.0.1/fhir", [], loopback=True)


def test_string_allowlist_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        check_fhir_server("https://fhir.example.org", "*", allow_loopback_http=False)


def test_invalid_entries_never_match_and_are_reported() -> None:
    bad = ["fhir.example.org", "https://u:p@fhir.example.org", "ftp://x"]
    assert "allowlist" in refused("https://fhir.example.org", bad)
    entries = bad + ["*", "https://ok.example/r4"]
    assert validate_allowlist(entries, allow_loopback_http=False) == bad
    assert validate_allowlist(ALLOW, allow_loopback_http=False) == []


def test_a_plain_http_entry_that_the_scheme_rule_refuses_is_reported() -> None:
    """A review found CDS_FHIR_SERVER_ALLOWLIST=http://fhir.example.org/r4 accepted at start-up
    in production, where every call naming that server was then refused (412)."""
    remote, local = "http://fhir.example.org/r4", "http://127.0.0.1:8080/fhir"
    assert "https" in refused(remote, [remote], loopback=False)
    assert validate_allowlist([remote, local], allow_loopback_http=False) == [remote, local]
    assert validate_allowlist([remote, local], allow_loopback_http=True) == [remote]


def test_reason_does_not_echo_the_url() -> None:
    reason = refused("https://secret-token-abc@fhir.example.org")
    assert "secret-token-abc" not in reason


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://h.example/fhir/Condition?page=2", True),
        ("https://H.EXAMPLE:443/fhir/Condition?page=2", True),
        ("https://h.example/fhir", True),
        ("https://h.example/fhir-other/Condition", False),
        ("https://h.example/Condition", False),
        ("https://h.example:444/fhir/Condition", False),
        ("http://h.example/fhir/Condition", False),
        ("https://h.example.evil.com/fhir/Condition", False),
        ("https://u@h.example/fhir/Condition", False),
        ("https://h.example/fhir/../admin", False),
        ("https://h.example/fhir/Condition#x", False),
        # Forms the server resolves itself: Tomcat (HAPI FHIR) reads "..;" as "..", and servers
        # that decode before routing read "%2f" as "/".
        ("https://h.example/fhir/..;/admin", False),
        ("https://h.example/fhir/..;jsessionid=1/admin", False),
        ("https://h.example/fhir/.;x/Condition", False),
        ("https://h.example/fhir/x%2f..%2f..%2fadmin", False),
        ("https://h.example/fhir/x%2F..%2Fadmin", False),
        ("https://h.example/fhir/x%5c..%5cadmin", False),
        ("https://h.example/fhir;jsessionid=1/Condition?page=2", False),  # not under "fhir"
        ("https://h.example/fhir/Condition;jsessionid=1?page=2", True),  # a plain parameter
    ],
)
def test_is_under_base(url: str, expected: bool) -> None:
    assert is_under_base(url, "https://h.example/fhir") is expected
