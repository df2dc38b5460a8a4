"""The sandbox's test API is read in one place: the Sandbox class in sandbox/core.py."""

from sandbox import Sandbox


def test_no_test_control_is_attached_to_the_sandbox_at_run_time():
    sandbox = Sandbox(seed=0)
    attached = sorted(name for name, value in vars(sandbox).items() if callable(value))
    assert attached == []
    for name in ("outbox", "subscriptions", "flush_notifications", "add_app_certificate"):
        assert callable(getattr(Sandbox, name))
