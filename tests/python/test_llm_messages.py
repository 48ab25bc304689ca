"""Memory.llm_messages: a session's newest turns within a token budget as OpenAI-style messages,
after a system message holding the system prompt and the retrieved passages with citation markers;
the budget counts the system message too."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import keel

AT = ("acme", "alice", "s1")


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture
def memory(tmp_path: Path) -> keel.Memory:
    # One token per word: budgets below are exact.
    mem = keel.Memory(tmp_path / "m.db", keel.Keyring.generate(), token_counter=words)
    for role, text in [
        ("user", "what makes wings lift"),  # 4
        ("assistant", "the angle of attack"),  # 4
        ("user", "and shells"),  # 2
        ("assistant", "they buckle"),  # 2
    ]:
        mem.append(*AT, role, text)
    return mem


PASSAGES = [
    {"doc_id": "wings.md", "title": "Wings", "text": "Lift grows with incidence."},
    {"doc_id": "shells.txt", "text": "Shells buckle."},
]
SYSTEM = (
    "Answer from the sources.\n\n"
    "Sources:\n"
    "[1] Wings (wings.md)\nLift grows with incidence.\n\n"
    "[2] shells.txt\nShells buckle."
)


def test_history_only_is_the_window_as_dicts(memory: keel.Memory) -> None:
    got = memory.llm_messages(*AT, budget=4)
    assert got == [
        {"role": "user", "content": "and shells"},
        {"role": "assistant", "content": "they buckle"},
    ]
    assert [m.content for m in memory.window(*AT, 4)] == [m["content"] for m in got]


def test_system_prompt_and_cited_passages_count_against_the_budget(memory: keel.Memory) -> None:
    need = words(SYSTEM)
    got = memory.llm_messages(
        *AT, budget=need + 5, system="Answer from the sources.", passages=PASSAGES
    )
    assert got[0] == {"role": "system", "content": SYSTEM}
    # 5 tokens left: the two newest turns (2 + 2), not the one before (4).
    assert [m["content"] for m in got[1:]] == ["and shells", "they buckle"]
    only = memory.llm_messages(
        *AT, budget=need, system="Answer from the sources.", passages=PASSAGES
    )
    assert only == [{"role": "system", "content": SYSTEM}]
    every = memory.llm_messages(*AT, budget=1000, system="Be brief.")
    assert every[0] == {"role": "system", "content": "Be brief."} and len(every) == 5


def test_hits_from_a_knowledge_base_are_cited_in_order(memory: keel.Memory, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "wings.md").write_text("# Wings\n\nLift grows with incidence.", encoding="utf-8")
    (folder / "shells.txt").write_text("Thin shells buckle under lift loads.", encoding="utf-8")
    kb = keel.KnowledgeBase()
    kb.index_folder(folder)
    hits = kb.search("lift", k=2)
    got = memory.llm_messages(*AT, budget=1000, passages=hits)
    system = got[0]["content"]
    assert system.startswith("Sources:\n[1] ")
    for n, hit in enumerate(hits, 1):
        assert f"[{n}] {hit.title} ({hit.doc_id})\n{hit.text}" in system


def test_a_new_session_has_only_the_system_message(memory: keel.Memory) -> None:
    got = memory.llm_messages("acme", "alice", "new", budget=100, system="Hi.")
    assert got == [{"role": "system", "content": "Hi."}]


def test_bad_input_is_a_typed_error(memory: keel.Memory) -> None:
    need = words(SYSTEM)
    with pytest.raises(keel.BudgetTooSmall) as err:
        memory.llm_messages(
            *AT, budget=need - 1, system="Answer from the sources.", passages=PASSAGES
        )
    assert (err.value.budget, err.value.needed) == (need - 1, need)
    assert f"token budget {need - 1} is too small" in str(err.value)
    assert isinstance(err.value, (keel.ConversationError, ValueError))
    with pytest.raises(keel.InvalidArgument, match="budget"):
        memory.llm_messages(*AT, budget=-1)
    with pytest.raises(TypeError, match="a passage must be"):
        memory.llm_messages(*AT, budget=10, passages=["text"])  # type: ignore[list-item]
    with pytest.raises(keel.InvalidArgument, match="text"):
        memory.llm_messages(*AT, budget=10, passages=[{"title": "t"}])


def test_async_memory_llm_messages(memory: keel.Memory) -> None:
    async def main() -> list[dict[str, str]]:
        return await keel.AsyncMemory(memory).llm_messages(
            *AT, budget=100, system="Answer from the sources.", passages=iter(PASSAGES)
        )

    got = asyncio.run(main())
    assert got[0] == {"role": "system", "content": SYSTEM} and len(got) == 5


def test_default_counter_estimates_four_chars_a_token(tmp_path: Path) -> None:
    mem = keel.Memory(tmp_path / "m.db", keel.Keyring.generate())
    mem.append(*AT, "user", "x" * 40)  # 10 tokens
    system = "s" * 20  # 5 tokens
    assert len(mem.llm_messages(*AT, budget=15, system=system)) == 2
    assert len(mem.llm_messages(*AT, budget=14, system=system)) == 1
    with pytest.raises(keel.BudgetTooSmall):
        mem.llm_messages(*AT, budget=4, system=system)
