"""The identity directory: blinded attributes, the matching rule, the pepper, and no raw PII at rest."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa

from authgate.aauth.directory import IdentityDirectory, Match
from authgate.app import build_context
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.context import ServerContext
from authgate.store import Store, User
from authgate.store import tables as t
from tests.helpers import run_cli

ANA = {"given_name": "Ana", "family_name": "Lopez", "birthdate": "1980-04-02", "postal_code": "94107",
       "email": "ana.lopez@example.com", "phone_number": "+14155550100", "acct_last4": "4821"}


async def add_user(store: Store, username: str) -> str:
    subject = "u_" + username
    await store.add_user(User(subject=subject, username=username, password_hash="x", created_at=int(time.time())))
    return subject


async def test_blind_is_hmac_of_normalised_value_under_the_stored_pepper(ctx: ServerContext) -> None:
    async with ctx.store.engine.connect() as conn:
        pepper = (await conn.execute(sa.select(t.server_secrets.c.value)
                                     .where(t.server_secrets.c.name == "aauth_pepper"))).scalar_one()
    expected = hmac.new(pepper.encode(), b"email\0ana.lopez@example.com", hashlib.sha256).hexdigest()
    assert ctx.identity.blind("email", " Ana.Lopez@EXAMPLE.com ") == expected
    assert ctx.identity.blind("birthdate", "April 2, 1980") == ctx.identity.blind("birthdate", "1980-04-02")
    # the name is part of the input: equal values under different names differ
    assert ctx.identity.blind("postal_code", "1234") != ctx.identity.blind("acct_last4", "1234")
    assert pepper not in repr(ctx.identity) and "aauth_pepper=" not in repr(ctx.settings)


async def test_match_with_enough_attributes(ctx: ServerContext) -> None:
    ana = await add_user(ctx.store, "ana")
    await ctx.identity.set_attributes(ana, ANA)
    m = await ctx.identity.match({"given_name": "ANA", "family_name": "lópez", "birthdate": "2 April 1980"})
    assert m == Match(ana, "matched", frozenset({"given_name", "family_name", "birthdate"}), m.user_index)
    assert m.user_index


async def test_not_enough_attributes_is_insufficient(ctx: ServerContext) -> None:
    ana = await add_user(ctx.store, "ana")
    await ctx.identity.set_attributes(ana, ANA)
    m = await ctx.identity.match({"family_name": "Lopez", "birthdate": "1980-04-02"})
    assert (m.outcome, m.subject, m.matched) == ("insufficient", None, frozenset())
    assert m.user_index


async def test_min_claims_is_a_setting(ctx: ServerContext, store: Store, clock: FrozenClock) -> None:
    ana = await add_user(ctx.store, "ana")
    await ctx.identity.set_attributes(ana, ANA)
    strict = await build_context(replace(ctx.settings, aauth_min_claims=4), clock, store)
    claims = {"given_name": "Ana", "family_name": "Lopez", "birthdate": "1980-04-02"}
    assert (await ctx.identity.match(claims)).outcome == "matched"
    assert (await strict.identity.match(claims)).outcome == "insufficient"
    assert (await strict.identity.match({**claims, "postal_code": "94107"})).subject == ana


async def test_only_public_attributes_never_match(ctx: ServerContext) -> None:
    ana = await add_user(ctx.store, "ana")
    await ctx.identity.set_attributes(ana, ANA)
    public = {k: ANA[k] for k in ("given_name", "family_name", "email", "phone_number")}
    m = await ctx.identity.match(public)
    assert (m.outcome, m.subject) == ("insufficient", None)
    # a non-public attribute submitted but not stored for the user does not help either
    bob = await add_user(ctx.store, "bob")
    await ctx.identity.set_attributes(bob, {"given_name": "Bob", "family_name": "Ray", "email": "bob@example.com"})
    m = await ctx.identity.match({"given_name": "Bob", "family_name": "Ray", "email": "bob@example.com",
                                  "birthdate": "1970-01-01"})
    assert (m.outcome, m.subject) == ("no_match", None)


async def test_two_users_sharing_attributes_are_ambiguous(ctx: ServerContext) -> None:
    twins = {"given_name": "Ana", "family_name": "Lopez", "birthdate": "1980-04-02", "postal_code": "94107"}
    a = await add_user(ctx.store, "ana1")
    b = await add_user(ctx.store, "ana2")
    await ctx.identity.set_attributes(a, {**twins, "acct_last4": "1111"})
    await ctx.identity.set_attributes(b, {**twins, "acct_last4": "2222"})
    m = await ctx.identity.match(twins)
    assert (m.outcome, m.subject, m.matched) == ("ambiguous", None, frozenset())
    # one more distinguishing attribute settles it
    assert (await ctx.identity.match({**twins, "acct_last4": "2222"})).subject == b


async def test_contradicting_attribute_is_no_match(ctx: ServerContext) -> None:
    ana = await add_user(ctx.store, "ana")
    await ctx.identity.set_attributes(ana, ANA)
    good = {"given_name": "Ana", "family_name": "Lopez", "birthdate": "1980-04-02", "postal_code": "94107"}
    assert (await ctx.identity.match(good)).subject == ana
    for wrong in ({"acct_last4": "0000"}, {"email": "someone@else.com"}, {"birthdate": "not a date"}):
        m = await ctx.identity.match({**good, **wrong})
        assert (m.outcome, m.subject, m.matched) == ("no_match", None, frozenset()), wrong


async def test_unknown_person_is_no_match(ctx: ServerContext) -> None:
    ana = await add_user(ctx.store, "ana")
    await ctx.identity.set_attributes(ana, ANA)
    m = await ctx.identity.match({"given_name": "Zed", "family_name": "Nobody", "birthdate": "1999-09-09"})
    assert (m.outcome, m.subject) == ("no_match", None) and m.user_index


async def test_user_index_follows_the_claimed_person(ctx: ServerContext) -> None:
    ana = await add_user(ctx.store, "ana")
    await ctx.identity.set_attributes(ana, ANA)
    base = {"given_name": "Ana", "family_name": "Lopez", "birthdate": "1980-04-02"}
    ok = await ctx.identity.match(base)
    # a near miss (all but one attribute right) counts against the same person, whatever else is rotated
    miss1 = await ctx.identity.match({**base, "acct_last4": "0001", "email": "x1@example.com"})
    miss2 = await ctx.identity.match({**base, "acct_last4": "0002", "email": "x2@example.com"})
    miss3 = await ctx.identity.match({"given_name": "Ana", "birthdate": "1980-04-02", "postal_code": "00000",
                                      "phone_number": "+15550000000"})
    assert miss1.outcome == miss2.outcome == miss3.outcome == "no_match"
    assert ok.user_index == miss1.user_index == miss2.user_index == miss3.user_index
    # public attributes alone (a name) never point at the person, so they cannot lock them out
    public_only = await ctx.identity.match({"given_name": "Ana", "family_name": "Lopez", "birthdate": "1999-01-01",
                                           "acct_last4": "0000"})
    assert public_only.outcome == "no_match" and public_only.user_index != ok.user_index
    # far from anyone: the strongest identifier submitted, stable across spellings
    far1 = await ctx.identity.match({"phone_number": "+1 415 555 0199", "given_name": "Q", "birthdate": "1990-01-01"})
    far2 = await ctx.identity.match({"phone_number": "+14155550199", "given_name": "R", "acct_last4": "9999"})
    far3 = await ctx.identity.match({"phone_number": "+14155550198", "given_name": "R", "acct_last4": "9999"})
    assert far1.user_index == far2.user_index != far3.user_index
    assert far1.user_index not in {ok.user_index, ctx.identity.blind("phone_number", "+14155550199")}


async def test_set_attributes_replaces_and_validates(ctx: ServerContext) -> None:
    ana = await add_user(ctx.store, "ana")
    await ctx.identity.set_attributes(ana, ANA)
    await ctx.identity.set_attributes(ana, {"email": "new@example.com", "acct_last4": "1111",
                                            "postal_code": "10001"})
    assert await ctx.identity.attribute_names(ana) == ["acct_last4", "email", "postal_code"]
    assert (await ctx.identity.match({k: ANA[k] for k in ("given_name", "family_name", "birthdate")})).outcome \
        == "no_match"
    with pytest.raises(ValueError) as info:
        await ctx.identity.set_attributes(ana, {"birthdate": "31/31/1931"})
    assert "birthdate" in str(info.value) and "31" not in str(info.value)
    assert await ctx.identity.attribute_names(ana) == ["acct_last4", "email", "postal_code"]  # unchanged
    with pytest.raises(ValueError):
        await ctx.identity.set_attributes("u_nobody", {"email": "a@example.com"})
    events = [e for e in await ctx.store.audit_events() if e["event"] == "user.attributes_set"]
    assert events and "new@example.com" not in str(events)
    assert await ctx.store.remove_user("ana")
    assert await ctx.store.identity_attributes(ana) == {}


async def test_malformed_requests_raise(ctx: ServerContext) -> None:
    with pytest.raises(ValueError):
        await ctx.identity.match({"Bad Name": "x", "family_name": "y", "birthdate": "1980-01-01"})
    with pytest.raises(ValueError):
        await ctx.identity.match({f"k{i}": "v" for i in range(ctx.settings.aauth_max_claims + 1)})


async def dump(store: Store) -> str:
    out = []
    async with store.engine.connect() as conn:
        for table in t.metadata.sorted_tables:
            out.extend(repr(tuple(row)) for row in await conn.execute(sa.select(table)))
    return "\n".join(out).casefold()


async def test_no_raw_pii_stored_anywhere(ctx: ServerContext) -> None:
    ana = await add_user(ctx.store, "ana")
    values = {"given_name": "Anastasia", "family_name": "Quetzalcoatl", "birthdate": "1961-11-29",
              "postal_code": "SW1A 1AA", "email": "anastasia.q@example.org", "phone_number": "+442079460958",
              "acct_last4": "4821", "loyalty_no": "ZX-998877"}
    await ctx.identity.set_attributes(ana, values)
    await ctx.identity.match({**values, "acct_last4": "4822"})
    await ctx.identity.match(values)
    text = await dump(ctx.store)
    tokens = set(re.findall(r"[a-z0-9]+", text))
    assert ctx.identity.blind("acct_last4", "4821") in tokens  # the dump does hold the attributes, blinded
    for name, raw in values.items():
        for form in {raw, ctx.identity.normalize(name, raw)}:
            # a short value may occur inside random hex (a pepper held "4821" once): compare whole tokens
            assert form.casefold() not in (tokens if len(form) < 8 else text), name
    # short pieces as whole tokens (inside random hex they may occur by chance)
    for piece in ("4821", "1961", "998877", "79460958", "anastasia", "sw1a"):
        assert piece not in tokens, piece


async def test_pepper_is_stable_across_contexts_on_one_store(ctx: ServerContext, store: Store,
                                                             clock: FrozenClock) -> None:
    ana = await add_user(ctx.store, "ana")
    await ctx.identity.set_attributes(ana, ANA)
    again = await build_context(ctx.settings, clock, store)
    assert again.identity.blind("email", ANA["email"]) == ctx.identity.blind("email", ANA["email"])
    claims = {"given_name": "Ana", "family_name": "Lopez", "birthdate": "1980-04-02"}
    assert (await again.identity.match(claims)).subject == ana
    assert (await ctx.identity.match(claims)).user_index == (await again.identity.match(claims)).user_index


async def test_pepper_setting_wins_and_a_change_is_warned_without_the_value(
        ctx: ServerContext, store: Store, clock: FrozenClock, caplog: pytest.LogCaptureFixture) -> None:
    pepper = "p" * 40
    with caplog.at_level(logging.DEBUG):
        other = await build_context(replace(ctx.settings, aauth_pepper=pepper), clock, store)
    expected = hmac.new(pepper.encode(), b"acct_last4\x001234", hashlib.sha256).hexdigest()
    assert other.identity.blind("acct_last4", "1234") == expected != ctx.identity.blind("acct_last4", "1234")
    assert "pepper differs" in caplog.text and pepper not in caplog.text
    with pytest.raises(ValueError):
        IdentityDirectory(store, ctx.settings, "short")


async def test_work_is_the_same_for_unknown_user_and_wrong_attribute(ctx: ServerContext,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ana = await add_user(ctx.store, "ana")
    await ctx.identity.set_attributes(ana, ANA)
    calls: dict[str, int] = {"compare": 0, "mac": 0, "query": 0}
    real_compare, real_mac, real_query = hmac.compare_digest, ctx.identity._mac, ctx.store.identity_candidates

    def compare(a: Any, b: Any) -> bool:
        calls["compare"] += 1
        return real_compare(a, b)

    def mac(name: str, value: str) -> str:
        calls["mac"] += 1
        return real_mac(name, value)

    async def query(*args: Any, **kwargs: Any) -> Any:
        calls["query"] += 1
        return await real_query(*args, **kwargs)

    monkeypatch.setattr(hmac, "compare_digest", compare)
    monkeypatch.setattr(ctx.identity, "_mac", mac)
    monkeypatch.setattr(ctx.store, "identity_candidates", query)
    counts = []
    for claims in (
        {"given_name": "Zed", "family_name": "Nobody", "birthdate": "1999-09-09", "acct_last4": "0000"},  # unknown
        {"given_name": "Ana", "family_name": "Lopez", "birthdate": "1980-04-02", "acct_last4": "0000"},  # wrong
        {"given_name": "Ana", "family_name": "Lopez", "birthdate": "1980-04-02", "acct_last4": "4821"},  # right
        {"given_name": "Ana", "family_name": "Lopez", "birthdate": "junk", "acct_last4": "4821"},  # unusable
    ):
        calls.update(compare=0, mac=0, query=0)
        await ctx.identity.match(claims)
        counts.append(dict(calls))
    assert counts[0] == counts[1] == counts[2] == counts[3] == {"compare": 4, "mac": 4, "query": 1}


def test_settings_validation() -> None:
    from authgate.config import ConfigError

    for bad in ({"aauth_pepper": "short"}, {"aauth_min_claims": 0}, {"aauth_date_order": "ymd"},
                {"aauth_default_country_code": "abc"}, {"aauth_lockout_threshold": 0}, {"aauth_rate_ip": -1}):
        with pytest.raises(ConfigError):
            Settings(**bad).validate()  # type: ignore[arg-type]
    Settings(aauth_pepper="x" * 32, aauth_default_country_code="+44", aauth_date_order="dmy").validate()


# --- the CLI: users add --attr, set-attributes, import ----------------------------------------------------


cli = run_cli


async def open_cli_store(tmp_path: Any) -> tuple[Store, IdentityDirectory]:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'authgate.db'}")
    return store, await IdentityDirectory.open(store, Settings(data_dir=tmp_path))


CSV = """\ufeffusername,password,email,phone,given_name,family_name,birthdate,postal_code,acct_last4,loyalty_no
ana,correct-horse-1,Ana.L@Example.com,+1 (415) 555-0100,Ana,Lopez,April 2 1980,94107,4821,LX-1
bob,,bob@example.com,,Bob,Ray,1977-13-45,10001,1111,
,,,,,,,,,
carol,,carol@example.com,555 0100,Carol,Nguyen,1990-01-01,,,
dave,,,,Dave,Okafor,1985-06-15,SW1A 1AA,9876,DV-77
erin,short,erin@example.com,,Erin,Li,1991-01-01,,,
"""


def test_cli_import_reports_bad_rows_and_stores_only_hashes(tmp_path: Any,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    d = ["--data-dir", str(tmp_path)]
    path = tmp_path / "people.csv"
    path.write_text(CSV, encoding="utf-8")
    code, out, err = cli(capsys, "users", "import", str(path), *d)
    assert code == 1
    assert "2 added, 0 updated; 3 row(s) with errors" in out
    assert "line 3: birthdate" in err and "line 5: phone_number" in err and "line 7: password" in err
    for value in ("1977-13-45", "555 0100", "bob@example.com", "carol", "short", "Nguyen"):
        assert value not in out + err

    async def check() -> None:
        store, directory = await open_cli_store(tmp_path)
        try:
            ana = await store.get_user_by_name("ana")
            dave = await store.get_user_by_name("dave")
            assert ana and dave and await store.get_user_by_name("bob") is None
            assert (ana.email, ana.phone) == ("Ana.L@Example.com", "+14155550100")  # approval channels
            assert await directory.attribute_names(ana.subject) == [
                "acct_last4", "birthdate", "email", "family_name", "given_name", "loyalty_no", "phone_number",
                "postal_code"]
            m = await directory.match({"given_name": "ana", "birthdate": "1980-04-02", "acct_last4": "4821"})
            assert m.subject == ana.subject
            m = await directory.match({"family_name": "okafor", "postal_code": "sw1a1aa", "loyalty_no": "dv77"})
            assert m.subject == dave.subject
            text = await dump(store)
            for raw in ("lopez", "1980", "4821", "94107", "okafor", "1985-06-15", "sw1a", "9876", "dv-77", "lx-1"):
                assert raw not in set(re.findall(r"[a-z0-9-]+", text)), raw
        finally:
            await store.close()

    asyncio.run(check())
    # importing again updates in place
    path.write_text("username,password,email,acct_last4\nana,new-password-1,ana@example.org,1234\n", encoding="utf-8")
    code, out, _ = cli(capsys, "users", "import", str(path), *d)
    assert code == 0 and "0 added, 1 updated" in out
    code, out, _ = cli(capsys, "users", "list", *d)
    assert "attributes=acct_last4,email" in out and "1234" not in out


def test_cli_import_refuses_a_bad_header(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "people.csv"
    for header in ("name,email", "username,Bad Column", "username,email,email"):
        path.write_text(header + "\nana,x\n", encoding="utf-8")
        code, _, err = cli(capsys, "users", "import", str(path), "--data-dir", str(tmp_path))
        assert code == 2 and "header" in err


def test_cli_add_with_attributes_and_set_attributes(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    d = ["--data-dir", str(tmp_path)]
    code, _, err = cli(capsys, "users", "add", "ana", "--password-stdin", "--attr", "birthdate=31/31/1980", *d,
                       stdin="s3cret-pass\n")
    assert code == 2 and "birthdate" in err and "31/31" not in err
    assert cli(capsys, "users", "list", *d)[1] == ""  # nothing created
    code, out, _ = cli(capsys, "users", "add", "ana", "--password-stdin", "--attr", "given_name=Ana",
                       "--attr", "family_name=Lopez", "--attr", "birthdate=1980-04-02", *d, stdin="s3cret-pass\n")
    assert code == 0 and "3 identity attribute(s)" in out and "Lopez" not in out
    code, out, _ = cli(capsys, "users", "set-attributes", "ana", "postal_code=94107", "--stdin", *d,
                       stdin="acct_last4=4821\ngiven_name=Ana\n")
    assert code == 0 and "acct_last4, given_name, postal_code" in out and "4821" not in out
    assert cli(capsys, "users", "set-attributes", "nobody", "a=b", *d)[0] == 1
    code, _, err = cli(capsys, "users", "set-attributes", "ana", "justavalue", *d)
    assert code == 2 and "name=value" in err and "justavalue" not in err

    async def check() -> None:
        store, directory = await open_cli_store(tmp_path)
        try:
            ana = await store.get_user_by_name("ana")
            assert ana is not None
            assert await directory.attribute_names(ana.subject) == ["acct_last4", "given_name", "postal_code"]
            assert (await directory.match({"given_name": "Ana", "postal_code": "94107", "acct_last4": "4821"})
                    ).subject == ana.subject
        finally:
            await store.close()

    asyncio.run(check())


async def test_processes_starting_together_agree_on_one_pepper(store: Store, settings: Settings) -> None:
    import asyncio

    directories = await asyncio.gather(*(IdentityDirectory.open(store, settings) for _ in range(5)))
    assert len({d.blind("acct_last4", "1234") for d in directories}) == 1
    async with store.engine.connect() as conn:
        count = (await conn.execute(sa.select(sa.func.count()).select_from(t.server_secrets))).scalar_one()
    assert count == 2  # the pepper and its check value, once each
