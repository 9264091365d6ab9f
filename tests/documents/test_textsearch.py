"""Choosing a document's text-search configuration: the sample, the choice, PostgreSQL's scoring."""

from __future__ import annotations

import asyncio

import pytest

from wcu_ai.database import open_pool
from wcu_ai.documents.store import detect_text_search_config
from wcu_ai.documents.textsearch import (
    SAMPLE_CHARS,
    TEXT_SEARCH_CONFIGS,
    choose_config,
    detection_sample,
)
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings

PROSE = {
    "english": "The committee reviewed the quarterly figures and approved the revised budget for the "
    "next year. We discussed the strategy with the members of the board, and they agreed that it "
    "was the right time to invest in the new plant.",
    "french": "Le comité a examiné les chiffres trimestriels et a approuvé le budget révisé pour "
    "l'année prochaine. Nous avons discuté de la stratégie avec les membres du conseil, et ils ont "
    "convenu que c'était le bon moment pour investir dans la nouvelle usine.",
    "german": "Der Ausschuss hat die Quartalszahlen geprüft und den überarbeiteten Haushalt für das "
    "nächste Jahr genehmigt. Wir haben die Strategie mit den Mitgliedern des Vorstands besprochen, "
    "und sie waren sich einig, dass es der richtige Zeitpunkt sei, in das neue Werk zu investieren.",
    "spanish": "El comité revisó las cifras trimestrales y aprobó el presupuesto revisado para el "
    "próximo año. Discutimos la estrategia con los miembros de la junta, y estuvieron de acuerdo en "
    "que era el momento adecuado para invertir en la nueva planta.",
    "russian": "Комитет рассмотрел квартальные показатели и утвердил пересмотренный бюджет на "
    "следующий год. Мы обсудили стратегию с членами совета, и они согласились, что это было "  # noqa: RUF001
    "подходящее время, чтобы вложить деньги в новый завод.",
    "swedish": "Kommittén granskade kvartalssiffrorna och godkände den reviderade budgeten för nästa "
    "år. Vi diskuterade strategin med styrelsens ledamöter, och de var överens om att det var rätt "
    "tid att investera i den nya fabriken.",
}


def _detect(settings: Settings, pages: list[str]) -> str:
    async def body() -> str:
        async with open_pool(settings) as pool, pool.connection() as conn:
            return await detect_text_search_config(conn, pages)

    return asyncio.run(body())


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    MigrationTool(settings).run_up()
    return settings


@pytest.mark.parametrize("language", sorted(PROSE))
def test_the_language_of_prose_is_detected(migrated: Settings, language: str) -> None:
    """Regression (issue 10, item 13): every document was indexed as English."""
    assert _detect(migrated, [PROSE[language]]) == language


def test_text_that_is_not_prose_gets_simple(migrated: Settings) -> None:
    table = "\n".join(f"{n:06d} {n * 17 % 1000:>5} EUR 2026-{n % 12 + 1:02d}-01 SKU-{n:x}" for n in range(60))
    assert _detect(migrated, [table]) == "simple"
    assert _detect(migrated, ["Invoice 4711"]) == "simple"
    assert _detect(migrated, ["", "  "]) == "simple"


def test_a_long_document_is_judged_on_a_bounded_sample_from_all_of_it(migrated: Settings) -> None:
    # A French body behind an English title page: the windows spread over the text find French.
    pages = ["Annual report " * 20] + [PROSE["french"]] * 200
    assert len(detection_sample(pages)) <= SAMPLE_CHARS
    assert _detect(migrated, pages) == "french"


def test_detection_sample_is_bounded_and_cut_at_words() -> None:
    short = ["one page", "", "two"]
    assert detection_sample(short) == "one page\ntwo"
    text = [f"word{n:05d} " for n in range(20_000)]
    sample = detection_sample(text)
    assert len(sample) <= SAMPLE_CHARS
    assert all(token.startswith("word") and len(token) == 9 for token in sample.split())
    assert "word00000" in sample and "word19999" in sample  # the first and last windows


def test_choose_config_needs_enough_words_and_stop_words() -> None:
    words = 100
    everything = dict.fromkeys(TEXT_SEARCH_CONFIGS, words)
    assert choose_config({**everything, "german": 50}) == "german"
    assert choose_config({**everything, "german": 90}) == "simple"  # 10 % stop words: not prose
    assert choose_config({**everything, "english": 50, "russian": 50}) == "english"  # a tie: the earlier
    assert choose_config({"simple": 10, "english": 2}) == "simple"  # too few words to judge
    assert choose_config({}) == "simple"
