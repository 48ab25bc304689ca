"""The voice bot's settings (environment variables) and its home folder.

The home folder (``VOICEBOT_HOME``) holds everything the bot keeps: ``keel.toml`` (the
``keel.Engine`` configuration: database, keyring file, rate limiters), ``keyring`` (mode 0600),
``keel.db`` (memory, API keys and the audit log), ``kb/`` (the knowledge-base index),
``uploads/`` (documents sent to ``/ingest``) and the host-shared rate-limit state, so every
uvicorn worker of one host shares one budget. ``init_home`` creates what is missing and never
overwrites a keyring or a configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUNDLED_DOCS = HERE / "kb"

#: The scopes a key can carry; "admin" reaches the key and audit routes and /ingest.
SCOPES = ("chat", "search", "admin")


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return default if value in (None, "") else float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {value!r}") from None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value in (None, "") else int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {value!r}") from None


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1/0, true/false, yes/no or on/off, not {value!r}")


@dataclass
class Settings:
    home: Path
    docs: Path = BUNDLED_DOCS
    #: OpenAI-compatible endpoint; unset = the offline extractive responder.
    llm_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_api_key: str | None = field(default=None, repr=False)
    #: Seconds between two words of the extractive responder (paced like a model).
    word_delay: float = 0.03
    tts: bool = True
    voice: str = "en-us"
    words_per_minute: int = 175
    tts_concurrency: int = 2
    #: Token budget of each model request: system prompt and passages first, then the newest
    #: turns of the history that fit (memory.llm_messages).
    history_budget: int = 3000
    top_k: int = 4
    #: Index the documents folder when the app starts (single-worker runs and tests; with
    #: several workers run ``python -m voicebot.demo --setup-only`` once instead).
    index_on_start: bool = False

    @property
    def config_path(self) -> Path:
        return self.home / "keel.toml"

    @property
    def kb_path(self) -> Path:
        return self.home / "kb"

    @property
    def uploads(self) -> Path:
        return self.home / "uploads"

    @classmethod
    def from_env(cls) -> Settings:
        home = os.environ.get("VOICEBOT_HOME")
        if not home:
            raise ValueError("VOICEBOT_HOME is not set: it names the voice bot's data folder")
        return cls(
            home=Path(home).resolve(),
            docs=Path(os.environ.get("VOICEBOT_DOCS") or BUNDLED_DOCS).resolve(),
            llm_base_url=os.environ.get("VOICEBOT_LLM_BASE_URL") or None,
            llm_model=os.environ.get("VOICEBOT_LLM_MODEL") or "gpt-4o-mini",
            llm_api_key=os.environ.get("VOICEBOT_LLM_API_KEY") or None,
            word_delay=_env_float("VOICEBOT_WORD_DELAY", 0.03),
            tts=_env_bool("VOICEBOT_TTS", True),
            voice=os.environ.get("VOICEBOT_VOICE") or "en-us",
            words_per_minute=_env_int("VOICEBOT_WPM", 175),
            tts_concurrency=_env_int("VOICEBOT_TTS_CONCURRENCY", 2),
            history_budget=_env_int("VOICEBOT_HISTORY_BUDGET", 3000),
            top_k=_env_int("VOICEBOT_TOP_K", 4),
            index_on_start=_env_bool("VOICEBOT_INDEX_ON_START", False),
        )


@dataclass(frozen=True)
class Limits:
    """Requests per window (seconds): per client IP and per API key (a key created with its own
    ``rate_limit`` gets that instead)."""

    per_ip: tuple[int, float] = (300, 60.0)
    per_key: tuple[int, float] = (120, 60.0)


def _toml_str(value: object) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def init_home(home: Path, limits: Limits = Limits()) -> Path:
    """Creates the home folder, its keyring (mode 0600) and ``keel.toml`` where missing.

    Returns the configuration path. An existing keyring or configuration is kept as it is: the
    keyring encrypts the stored conversations and keys, so replacing it would lose them."""
    import keel

    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    (home / "ratelimit").mkdir(exist_ok=True, mode=0o700)
    keyring = home / "keyring"
    if not keyring.exists():
        fd = os.open(keyring, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"1:{keel.Keyring.generate_key()}\n")
    config = home / "keel.toml"
    if not config.exists():
        lines = [
            "# The voice bot's keel.Engine configuration (created by voicebot.settings.init_home).",
            "[database]",
            f"url = {_toml_str('sqlite://' + str(home / 'keel.db'))}",
            "",
            "[keyring]",
            f"file = {_toml_str(keyring)}",
            "",
            "[api_keys]",
            'accepted_envs = ["live"]',
        ]
        for name, (limit, window) in (("per_ip", limits.per_ip), ("per_key", limits.per_key)):
            lines += [
                "",
                f"[ratelimit.{name}]",
                f"limit = {limit}",
                f"window = {window}",
                f"shared = {_toml_str(home / 'ratelimit' / name)}",
            ]
        config.write_text("\n".join(lines) + "\n")
    return config


def create_admin_key(engine: object, *, tenant: str = "demo", name: str = "admin") -> str:
    """A new live key with every scope (the key is shown once; only its hash is stored)."""
    key, _info = engine.api_keys.create(  # type: ignore[attr-defined]
        tenant, name, scopes=list(SCOPES), actor="setup"
    )
    return key
