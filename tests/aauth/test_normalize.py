# ruff: noqa: RUF001 - look-alike characters (full-width, curly quotes) are what these tests are about
"""Canonical forms of identity attributes, and the flattening of ``user_claims``."""

from __future__ import annotations

import pytest

from authgate.aauth.normalize import MAX_RAW_LENGTH, flatten_claims, normalize


@pytest.mark.parametrize(("name", "raw", "expected"), [
    # names: NFKC, case fold, spaces/punctuation removed, diacritics folded
    ("given_name", "Ana", "ana"),
    ("given_name", "  ANA ", "ana"),
    ("given_name", "Ａｎａ", "ana"),  # full-width letters (NFKC)
    ("given_name", "José-María", "josemaria"),
    ("given_name", "Jose Maria", "josemaria"),
    ("family_name", "O'Brien", "obrien"),
    ("family_name", "O’Brien", "obrien"),
    ("family_name", "Łukasiewicz", "lukasiewicz"),
    ("family_name", "Straße", "strasse"),
    ("family_name", "ﬁnch", "finch"),  # ligature (NFKC)
    # dates
    ("birthdate", "1980-04-02", "1980-04-02"),
    ("birthdate", "1980/4/2", "1980-04-02"),
    ("birthdate", "1980.04.02", "1980-04-02"),
    ("birthdate", "19800402", "1980-04-02"),
    ("birthdate", "１９８０－０４－０２", "1980-04-02"),  # full-width digits and dash
    ("birthdate", "02.04.1980", "1980-04-02"),
    ("birthdate", "2 April 1980", "1980-04-02"),
    ("birthdate", "2nd april 1980", "1980-04-02"),
    ("birthdate", "April 2, 1980", "1980-04-02"),
    ("birthdate", "Apr. 2 1980", "1980-04-02"),
    ("birthdate", "02-Apr-1980", "1980-04-02"),
    ("birthdate", "13/04/1980", "1980-04-13"),  # day first: 13 is no month
    ("birthdate", "04/13/1980", "1980-04-13"),  # month first: 13 is no month
    ("birthdate", "04/04/1980", "1980-04-04"),
    # phone numbers
    ("phone_number", "+14155550100", "+14155550100"),
    ("phone_number", "+1 (415) 555-0100", "+14155550100"),
    ("phone_number", "+1.415.555.0100", "+14155550100"),
    ("phone_number", "＋１ ４１５ ５５５ ０１００", "+14155550100"),  # full-width
    ("phone_number", "+44 (0)20 7946 0958", "+442079460958"),
    ("phone_number", "0044 20 7946 0958", "+442079460958"),
    ("phone_number", "+٤٤٢٠٧٩٤٦٠٩٥٨", "+442079460958"),  # Arabic-Indic digits
    # e-mail
    ("email", "alice@example.com", "alice@example.com"),
    ("email", " Alice@Example.COM ", "alice@example.com"),
    ("email", "ALICE.Smith+tag@example.com.", "alice.smith+tag@example.com"),
    ("email", "alice @ example.com", "alice@example.com"),
    ("email", "ａｌｉｃｅ＠ｅｘａｍｐｌｅ．ｃｏｍ", "alice@example.com"),
    ("email", "bob@Bücher.de", "bob@xn--bcher-kva.de"),
    # postal codes, account digits, tenant keys
    ("postal_code", "94107", "94107"),
    ("postal_code", "94107-1234", "94107"),
    ("postal_code", "SW1A 1AA", "sw1a1aa"),
    ("postal_code", "sw1a-1aa", "sw1a1aa"),
    ("acct_last4", "1234", "1234"),
    ("acct_last4", "12 34", "1234"),
    ("acct_last4", "１２３４", "1234"),
    ("loyalty_tier", " Gold! ", "gold"),
    ("member_no", "AB-12 34", "ab1234"),
])
def test_normalize_variants(name: str, raw: str, expected: str) -> None:
    assert normalize(name, raw) == expected


def test_national_phone_numbers_need_a_default_country() -> None:
    with pytest.raises(ValueError, match="international"):
        normalize("phone_number", "(415) 555-0100")
    assert normalize("phone_number", "(415) 555-0100", default_country_code="1") == "+14155550100"
    assert normalize("phone_number", "1-415-555-0100", default_country_code="+1") == "+14155550100"
    assert normalize("phone_number", "020 7946 0958", default_country_code="44") == "+442079460958"


def test_ambiguous_dates_need_a_configured_order() -> None:
    with pytest.raises(ValueError, match="ambiguous"):
        normalize("birthdate", "04/02/1980")
    assert normalize("birthdate", "04/02/1980", date_order="mdy") == "1980-04-02"
    assert normalize("birthdate", "04/02/1980", date_order="dmy") == "1980-02-04"


SECRET = "Zebra-Quokka-7"


@pytest.mark.parametrize(("name", "raw"), [
    ("given_name", ""),
    ("given_name", "  -- "),
    ("given_name", "R2D2"),
    ("birthdate", "80-04-02"),  # two-digit year
    ("birthdate", "1980-02-30"),
    ("birthdate", "1980-13-01"),
    ("birthdate", "0001-01-01"),
    ("birthdate", "yesterday"),
    ("birthdate", "2 Avril 1980"),
    ("phone_number", "+1 415 555 0100 ext 12"),
    ("phone_number", "+0123456789"),
    ("phone_number", "+12"),
    ("phone_number", "+1234567890123456"),  # 16 digits
    ("email", "alice"),
    ("email", "alice@"),
    ("email", "@example.com"),
    ("email", "alice@localhost"),
    ("email", "alice@exa_mple.com"),
    ("postal_code", "!"),
    ("postal_code", "12345678901"),
    ("acct_last4", "123"),
    ("acct_last4", "12345"),
    ("acct_last4", "12a4"),
    ("loyalty_tier", "!!!"),
    ("loyalty_tier", "x" * (MAX_RAW_LENGTH + 1)),
    ("Bad-Name", "x"),
    ("1abc", "x"),
    ("a" * 33, "x"),
])
def test_unusable_values_are_refused(name: str, raw: str) -> None:
    with pytest.raises(ValueError):
        normalize(name, raw)


@pytest.mark.parametrize(("name", "raw"), [
    ("given_name", SECRET), ("birthdate", SECRET), ("phone_number", SECRET), ("email", SECRET),
    ("postal_code", SECRET + "!" * 3 + SECRET), ("acct_last4", SECRET), ("custom", SECRET * 20),
])
def test_errors_name_the_attribute_never_the_value(name: str, raw: str) -> None:
    with pytest.raises(ValueError) as info:
        normalize(name, raw)
    assert name in str(info.value)
    assert SECRET.casefold()[:5] not in str(info.value).casefold()


def test_non_string_value_is_refused() -> None:
    with pytest.raises(ValueError):
        normalize("given_name", 42)  # type: ignore[arg-type]


def test_flatten_claims_address_and_tenant_keys() -> None:
    claims = {"given_name": "Ana", "family_name": "Lopez", "birthdate": "1980-04-02",
              "address": {"postal_code": "94107"}, "acct_last4": "1234"}
    assert flatten_claims(claims) == {"given_name": "Ana", "family_name": "Lopez", "birthdate": "1980-04-02",
                                      "postal_code": "94107", "acct_last4": "1234"}


@pytest.mark.parametrize("claims", [
    "not an object",
    ["given_name", "Ana"],
    None,
    {"given_name": 42},
    {"given_name": None},
    {"given_name": True},
    {"given_name": ["Ana"]},
    {"given_name": {"first": "Ana"}},  # nested, not address
    {"address": {"postal_code": "94107", "street_address": "1 Main St"}},
    {"address": {"postal_code": {"zip": "94107"}}},
    {"address": {}},
    {"address": "94107"},
    {"postal_code": "94107", "address": {"postal_code": "94107"}},
    {"Given_Name": "Ana"},
    {"given-name": "Ana"},
    {"": "x"},
    {"x" * 33: "y"},
    {f"k{i}": "v" for i in range(17)},
    {"given_name": "a" * (MAX_RAW_LENGTH + 1)},
])
def test_flatten_claims_refusals(claims: object) -> None:
    with pytest.raises(ValueError):
        flatten_claims(claims)


def test_flatten_claims_limit_is_configurable_and_errors_carry_no_values() -> None:
    assert flatten_claims({"a": "1", "b": "2"}, max_claims=2) == {"a": "1", "b": "2"}
    with pytest.raises(ValueError):
        flatten_claims({"a": "1", "b": "2", "c": "3"}, max_claims=2)
    with pytest.raises(ValueError) as info:
        flatten_claims({"given_name": {"nested": SECRET}})
    assert SECRET not in str(info.value)
