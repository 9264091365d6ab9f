from __future__ import annotations

import pytest

from wcu_ai.errors import DocumentError
from wcu_ai.tasks.model import error_text, retry_delay, should_retry


def test_retry_delay_grows_exponentially_and_is_capped() -> None:
    delays = [retry_delay(n, base=2, cap=30, jitter=0) for n in range(1, 7)]
    assert delays == [2, 4, 8, 16, 30, 30]


def test_retry_delay_jitter_stays_within_bounds() -> None:
    for _ in range(100):
        assert 9.0 <= retry_delay(1, base=10, cap=100, jitter=0.1) <= 11.0


def test_retry_delay_zero_base_means_retry_now() -> None:
    assert retry_delay(3, base=0, cap=10) == 0.0


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "permanent", "expected"),
    [(1, 3, False, True), (3, 3, False, False), (1, 3, True, False)],
)
def test_should_retry(attempts: int, max_attempts: int, permanent: bool, expected: bool) -> None:
    assert should_retry(attempts, max_attempts, permanent=permanent) is expected


def test_error_text_keeps_our_messages_plain_and_names_foreign_ones() -> None:
    assert error_text(DocumentError("the PDF is password-protected")) == "the PDF is password-protected"
    assert error_text(KeyError("x")) == "KeyError: 'x'"
    assert len(error_text(RuntimeError("y" * 5000))) == 2000
