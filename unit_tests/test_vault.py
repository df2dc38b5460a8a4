"""The vault: sealing, key separation, tampering and key rotation."""

import base64

import pytest

from services.vault import (
    VERSION_PREFIX,
    Vault,
    VaultError,
    config_secrets_from,
)

DB_UUID = "0b6c2a8e-4f7e-11ef-9a3b-0242ac120002"
OTHER_UUID = "5d1f9c3a-4f7e-11ef-9a3b-0242ac120002"
TOKEN = "0.AXoA-refresh-token-that-must-never-leak-0123456789"
KEY_HINT = "the database was copied or the vault secret changed; reconnect"


def assert_cannot_open(vault, sealed, purpose, plaintext=TOKEN):
    with pytest.raises(VaultError) as caught:
        vault.open(sealed, purpose)
    message = str(caught.value)
    assert KEY_HINT in message
    assert purpose in message
    # No fragment of the secret, however short, reaches the message.
    for start in range(0, len(plaintext) - 8):
        assert plaintext[start : start + 8] not in message
    assert caught.value.__cause__ is None


def flip_byte(sealed, index):
    raw = bytearray(base64.urlsafe_b64decode(sealed[len(VERSION_PREFIX) :]))
    raw[index] ^= 0x01
    return VERSION_PREFIX + base64.urlsafe_b64encode(bytes(raw)).decode()


def test_round_trip():
    vault = Vault(DB_UUID, ["s3cret-current"])
    sealed = vault.seal(TOKEN, "token")
    assert isinstance(sealed, str)
    assert TOKEN not in sealed
    assert vault.open(sealed, "token") == TOKEN
    # A fresh instance with the same configuration opens it too.
    assert Vault(DB_UUID, ["s3cret-current"]).open(sealed, "token") == TOKEN


def test_each_seal_differs():
    vault = Vault(DB_UUID)
    assert vault.seal(TOKEN, "token") != vault.seal(TOKEN, "token")


def test_bytes_and_str_inputs():
    vault = Vault(DB_UUID, ["s3cret"])
    sealed = vault.seal("pässwörd".encode(), "client_secret")
    assert vault.open(sealed, "client_secret") == "pässwörd"
    assert vault.open(sealed.encode("ascii"), "client_secret") == "pässwörd"


def test_non_text_is_refused_without_quoting_it():
    vault = Vault(DB_UUID)
    with pytest.raises(ValueError, match="UTF-8") as caught:
        vault.seal(b"\xffsecret", "token")
    assert "ff" not in str(caught.value)
    with pytest.raises(TypeError):
        vault.seal(12345, "token")


def test_empty_values():
    vault = Vault(DB_UUID)
    assert vault.open(vault.seal("", "token"), "token") == ""
    for nothing in (None, False, "", b""):
        assert vault.open_or_none(nothing, "token") is None
    with pytest.raises(VaultError):
        vault.open("", "token")
    with pytest.raises(VaultError):
        vault.open(None, "token")


def test_open_or_none_still_refuses_a_bad_value():
    vault = Vault(DB_UUID)
    with pytest.raises(VaultError):
        vault.open_or_none("v1:garbage", "token")


def test_purposes_are_separate():
    vault = Vault(DB_UUID, ["s3cret"])
    sealed = vault.seal(TOKEN, "token")
    assert_cannot_open(vault, sealed, "flow")
    assert vault.open(vault.seal(TOKEN, "flow"), "flow") == TOKEN


@pytest.mark.parametrize("purpose", ["", "Token", "token flow", "x" * 65, None, "tök"])
def test_invalid_purpose(purpose):
    vault = Vault(DB_UUID)
    with pytest.raises(ValueError, match="purpose"):
        vault.seal(TOKEN, purpose)


@pytest.mark.parametrize("index", [0, 9, 30, -1])
def test_tampering_is_detected(index):
    vault = Vault(DB_UUID, ["s3cret"])
    sealed = vault.seal(TOKEN, "token")
    assert_cannot_open(vault, flip_byte(sealed, index), "token")


def test_garbage_and_unknown_versions():
    vault = Vault(DB_UUID)
    fernet_token = vault.seal(TOKEN, "token")[len(VERSION_PREFIX) :]
    for garbage in (
        fernet_token,  # no version prefix
        "v2:" + fernet_token,
        "V1:" + fernet_token,
        "v1:",
        "v1:not base64 at all!",
        "v1:é" + fernet_token,
        b"v1:\xff\xfe",
        TOKEN,
        12,
    ):
        assert_cannot_open(vault, garbage, "token")


def test_another_database_cannot_open():
    sealed = Vault(DB_UUID, ["s3cret"]).seal(TOKEN, "token")
    assert_cannot_open(Vault(OTHER_UUID, ["s3cret"]), sealed, "token")
    sealed = Vault(DB_UUID).seal(TOKEN, "token")
    assert_cannot_open(Vault(OTHER_UUID), sealed, "token")


def test_a_dump_without_the_config_secret_cannot_open():
    sealed = Vault(DB_UUID, ["s3cret"]).seal(TOKEN, "token")
    # Whoever holds the dump knows the UUID, not the configuration secret.
    assert_cannot_open(Vault(DB_UUID), sealed, "token")
    assert_cannot_open(Vault(DB_UUID, ["guess"]), sealed, "token")


def test_has_config_secret():
    assert not Vault(DB_UUID).has_config_secret
    assert not Vault(DB_UUID, ["", ""]).has_config_secret
    assert Vault(DB_UUID, ["s3cret"]).has_config_secret


def test_repr_shows_no_key_material():
    text = repr(Vault(DB_UUID, ["s3cret"]))
    assert "s3cret" not in text
    assert DB_UUID not in text


def test_database_uuid_is_required():
    with pytest.raises(ValueError, match="UUID"):
        Vault("  ")


def test_rotation_keeps_old_values_open_then_reseals():
    old = Vault(DB_UUID, ["old-secret"])
    sealed = old.seal(TOKEN, "token")

    # New secret first, the old one kept after it.
    rotating = Vault(DB_UUID, ["new-secret", "old-secret"])
    assert rotating.open(sealed, "token") == TOKEN
    resealed = rotating.reseal(sealed, "token")
    assert resealed.startswith(VERSION_PREFIX)

    new_only = Vault(DB_UUID, ["new-secret"])
    assert new_only.open(resealed, "token") == TOKEN
    assert_cannot_open(new_only, sealed, "token")
    assert_cannot_open(old, resealed, "token")


def test_adding_a_first_secret_keeps_uuid_only_values_open():
    sealed = Vault(DB_UUID).seal(TOKEN, "token")
    vault = Vault(DB_UUID, ["s3cret"])
    assert vault.open(sealed, "token") == TOKEN
    resealed = vault.reseal(sealed, "token")
    # Once re-sealed, the dump alone no longer opens it.
    assert_cannot_open(Vault(DB_UUID), resealed, "token")
    assert vault.open(resealed, "token") == TOKEN


def test_reseal_refuses_what_it_cannot_open():
    vault = Vault(DB_UUID, ["s3cret"])
    sealed = Vault(OTHER_UUID, ["s3cret"]).seal(TOKEN, "token")
    with pytest.raises(VaultError, match="reconnect"):
        vault.reseal(sealed, "token")
    with pytest.raises(VaultError):
        vault.reseal("v9:" + sealed[3:], "token")
    with pytest.raises(VaultError):
        vault.reseal(vault.seal(TOKEN, "token"), "flow")


def test_config_secrets_from_option():
    env = {"MICROSOFT_OUTLOOK_GRAPH_VAULT_SECRET": "from-env"}
    assert config_secrets_from(" new , old,, older ,new", env) == ["new", "old", "older"]


def test_config_secrets_from_environment():
    env = {"MICROSOFT_OUTLOOK_GRAPH_VAULT_SECRET": "current,previous"}
    assert config_secrets_from(None, env) == ["current", "previous"]
    assert config_secrets_from(False, env) == ["current", "previous"]
    assert config_secrets_from("", env) == ["current", "previous"]


def test_config_secrets_from_nothing():
    assert config_secrets_from(None, {}) == []
    assert config_secrets_from(" , ", {"MICROSOFT_OUTLOOK_GRAPH_VAULT_SECRET": " "}) == []
