"""The library logs through ``logging``: one default handler on standard error, adjustable."""

import logging

import pytest

from autotransfer import log


@pytest.fixture
def restored():
    """Leave the library logger as the other tests expect it."""
    yield
    log.set_verbosity(logging.INFO)
    log.enable_default_handler()
    log.disable_propagation()


def test_messages_go_to_the_current_stderr_with_the_library_prefix(capsys, restored):
    log.get_logger("autotransfer.study.prior").info("warm start: hello")
    captured = capsys.readouterr()
    assert captured.err == "[autotransfer] warm start: hello\n" and captured.out == ""


def test_verbosity_hides_info_and_keeps_warnings(capsys, restored):
    log.set_verbosity(logging.WARNING)
    assert log.get_verbosity() == logging.WARNING
    logger = log.get_logger("autotransfer.search")
    logger.info("progress")
    logger.warning("a problem")
    assert capsys.readouterr().err == "[autotransfer] a problem\n"


def test_an_application_can_take_the_messages_into_its_own_handlers(capsys, restored):
    class Kept(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    kept, root = Kept(), logging.getLogger()
    root.addHandler(kept)
    try:
        log.disable_default_handler()
        log.enable_propagation()
        log.get_logger("autotransfer.search").info("resuming")
    finally:
        root.removeHandler(kept)
    assert kept.messages == ["resuming"] and capsys.readouterr().err == ""
