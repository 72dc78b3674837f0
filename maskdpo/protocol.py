"""The official ANAH-v2 judge protocol's assets: pinned files, a content-addressed cache, ``ast`` parsers.

The judge ``opencompass/anah-v2`` is fine-tuned on one exact protocol, so its
texts are part of the instrument. They are not ours to copy, so the project
never contains them: it downloads two files at pinned commits, checks their
sha256 and keeps them in a content-addressed cache,
``$MASKDPO_CACHE/protocol/<sha256>`` (``$MASKDPO_CACHE`` defaults to
``~/.cache/maskdpo``):

- ANAH's prompt functions (``eval/anah_v2/anahv2_prompt.py``): three
  functions, each returning an English or a Chinese f-string chosen by
  ``language == "zh"``;
- LMDeploy's chat templates (``lmdeploy/model.py`` of v0.5.2.post1, the
  version the official evaluation ran): the default ``meta_instruction`` of
  ``InternLMChat7B.__init__``, which that version's ``internlm2`` template
  inserts as the system turn.

Both are parsed with :mod:`ast`, never imported or executed. A template is
kept as its parts (text and named fields) and rendered by substituting the
function's parameters, which gives the function's return value byte for byte
(the leading newline and the source's indentation included).

Testing hooks (documented, never needed in normal use):
``MASKDPO_PROTOCOL_PINS`` names a JSON file of pins that *replace* the
official ones (tests pin synthetic files of the same shape);
``MASKDPO_PROTOCOL_BASE_URL`` replaces ``https://raw.githubusercontent.com``
(tests serve files from 127.0.0.1; also usable for a mirror).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Union

PROMPTS = "prompts"  # kind of the ANAH prompt-function file
CHAT_TEMPLATE = "chat-template"  # kind of LMDeploy's model.py
SPLITTER = "splitter"  # kind of ANAH's utils.py: the sentence rewrite rules of its splitter
KINDS = (PROMPTS, CHAT_TEMPLATE, SPLITTER)
REWRITE_FUNCTION = "sentence_tokenize_process_dot"  # its rules: `re.sub` before the split, and back after
DEFAULT_BASE_URL = "https://raw.githubusercontent.com"
PINS_ENV = "MASKDPO_PROTOCOL_PINS"
BASE_URL_ENV = "MASKDPO_PROTOCOL_BASE_URL"

# The three prompt functions, in turn order, with their parameters (the official signatures).
PROMPT_FUNCTIONS = (
    ("facts", "fact_check_prompt", ("question", "annotation", "language")),
    ("reference", "reference_check_prompt", ("question", "reference", "annotation", "language")),
    ("type", "hallucination_check_prompt", ("question", "reference", "annotation", "language")),
)
TURN_NAMES = tuple(turn for turn, _, _ in PROMPT_FUNCTIONS)
TEMPLATE_CLASS = "InternLMChat7B"  # whose __init__ default meta_instruction the internlm2 template inherits


class ProtocolError(ValueError):
    """A protocol file is missing, has the wrong hash, or has an unexpected shape; the message says which."""


class ProtocolAssetMissing(ProtocolError):
    """A pinned file is not in the cache and could not be downloaded."""


@dataclass(frozen=True)
class PinnedFile:
    """One protocol file at a pinned commit, identified by its sha256."""

    kind: str
    repo: str
    commit: str
    path: str
    sha256: str

    def url(self, base_url: str | None = None) -> str:
        base = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        return f"{base}/{self.repo}/{self.commit}/{self.path}"

    @property
    def label(self) -> str:
        return f"{self.repo}@{self.commit[:12]}:{self.path}"


OFFICIAL_PINS = (
    PinnedFile(PROMPTS, "open-compass/ANAH", "89d24d890f9e0ad6c8dd6236b55fe68e1ff98e62",
               "eval/anah_v2/anahv2_prompt.py", "d8611d4f006d143bc65b304a5c5980af7acc737ab937403efca49fa78ec5754a"),
    PinnedFile(CHAT_TEMPLATE, "InternLM/lmdeploy", "fb6f8ea4526fc40bab757a76d55b2571e9b3f133",
               "lmdeploy/model.py", "2fafd98ba9f9572144aac4c8f164eef269c9ed469e87b90d2c111c70d7c8dfff"),
    PinnedFile(SPLITTER, "open-compass/ANAH", "89d24d890f9e0ad6c8dd6236b55fe68e1ff98e62",
               "eval/anah_v2/utils.py", "6882b1fb95b0c55bcbb33264ccff160384e19bbf2674c47e89daf5ec641c641a"),
)


def pins() -> tuple[PinnedFile, ...]:
    """The pinned files: the official ones, or those of ``$MASKDPO_PROTOCOL_PINS`` (a testing hook)."""
    path = os.environ.get(PINS_ENV)
    if not path:
        return OFFICIAL_PINS
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"${PINS_ENV}={path}: cannot read a JSON list of pins ({exc})") from None
    if not isinstance(data, list):
        raise ProtocolError(f"${PINS_ENV}={path}: expected a JSON list of pins")
    out = []
    for i, item in enumerate(data):
        fields = ("kind", "repo", "commit", "path", "sha256")
        if not isinstance(item, dict) or any(not isinstance(item.get(f), str) for f in fields):
            raise ProtocolError(f"${PINS_ENV}={path}: pin [{i}] needs string fields {', '.join(fields)}")
        if item["kind"] not in KINDS:
            raise ProtocolError(f"${PINS_ENV}={path}: pin [{i}].kind must be one of {', '.join(KINDS)}")
        out.append(PinnedFile(**{f: item[f] for f in fields}))
    return tuple(out)


def pin_of_kind(kind: str) -> PinnedFile:
    for pin in pins():
        if pin.kind == kind:
            return pin
    raise ProtocolError(f"no pinned {kind} file")


def pin_by_sha256(sha256: str) -> PinnedFile | None:
    return next((p for p in pins() if p.sha256 == sha256), None)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- the cache


def cache_dir() -> Path:
    """``$MASKDPO_CACHE/protocol`` (default ``~/.cache/maskdpo/protocol``)."""
    root = os.environ.get("MASKDPO_CACHE") or "~/.cache/maskdpo"
    return Path(root).expanduser() / "protocol"


def _store(data: bytes, sha256: str) -> Path:
    """Write ``data`` to the cache under its hash, atomically (a killed write leaves no partial file)."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / sha256
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".partial-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def cached_path(pin: PinnedFile) -> Path | None:
    """The cached copy of ``pin`` when present and intact, else None."""
    path = cache_dir() / pin.sha256
    if not path.is_file():
        return None
    if sha256_bytes(path.read_bytes()) != pin.sha256:
        raise ProtocolError(f"{path}: the cached file no longer has the sha256 it is named by; delete it and "
                            f"run `maskdpo protocol fetch` (or `maskdpo protocol add FILE`)")
    return path


def add(path: str | Path) -> tuple[PinnedFile, Path]:
    """Add a local copy of a pinned file (e.g. from a clone) to the cache, after checking its sha256."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProtocolError(f"{path}: cannot read ({exc.strerror or exc})") from None
    digest = sha256_bytes(data)
    pin = pin_by_sha256(digest)
    if pin is None:
        expected = "; ".join(f"{p.label} sha256 {p.sha256}" for p in pins())
        raise ProtocolError(f"{path}: sha256 {digest} is not a pinned protocol file (expected one of: {expected})")
    return pin, _store(data, digest)


def download(pin: PinnedFile, base_url: str | None = None, timeout: float = 30.0) -> Path:
    """Download ``pin`` from its pinned commit, check the hash, store it; a clear error when offline."""
    import httpx

    url = pin.url(base_url)
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise ProtocolAssetMissing(_missing_message(pin, url, f"{type(exc).__name__}: {exc}")) from None
    if response.status_code != 200:
        raise ProtocolAssetMissing(_missing_message(pin, url, f"HTTP {response.status_code}"))
    digest = sha256_bytes(response.content)
    if digest != pin.sha256:
        raise ProtocolError(f"{url}: downloaded file has sha256 {digest}, expected {pin.sha256} ({pin.label}); "
                            "nothing was stored")
    return _store(response.content, digest)


def _missing_message(pin: PinnedFile, url: str, reason: str) -> str:
    return (f"the {pin.kind} file {pin.label} (sha256 {pin.sha256}) is not in the protocol cache {cache_dir()} "
            f"and could not be downloaded from {url} ({reason}). Download it on a connected machine (or take it "
            f"from a clone at commit {pin.commit}) and add it with: maskdpo protocol add FILE")


def fetch(base_url: str | None = None, kinds: tuple[str, ...] = KINDS) -> list[tuple[PinnedFile, Path, bool]]:
    """Make sure every pinned file of ``kinds`` is cached; returns ``(pin, path, downloaded)`` rows."""
    rows = []
    for pin in pins():
        if pin.kind not in kinds:
            continue
        path = cached_path(pin)
        rows.append((pin, path, False) if path else (pin, download(pin, base_url), True))
    return rows


def ensure(kind: str) -> tuple[PinnedFile, Path]:
    """The cached file of ``kind``, downloaded on first use."""
    pin = pin_of_kind(kind)
    path = cached_path(pin)
    return pin, path if path is not None else download(pin)


def listing() -> list[dict]:
    """One row per pinned file (``cached`` or ``missing``) and per unknown file in the cache."""
    folder = cache_dir()
    rows = []
    known = set()
    for pin in pins():
        known.add(pin.sha256)
        path = folder / pin.sha256
        status = "missing"
        if path.is_file():
            status = "cached" if sha256_bytes(path.read_bytes()) == pin.sha256 else "corrupt"
        rows.append({"sha256": pin.sha256, "kind": pin.kind, "source": pin.label, "status": status,
                     "path": str(path)})
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.name not in known and not path.name.startswith(".partial-"):
                rows.append({"sha256": path.name, "kind": "?", "source": "not pinned", "status": "unknown",
                             "path": str(path)})
    return rows


# ---------------------------------------------------------------- ast parsers

Field = tuple[str, int]  # (parameter name, f-string conversion: -1 none, 115 !s, 114 !r, 97 !a)
Template = tuple[Union[str, Field], ...]


def render(template: Template, values: dict[str, str]) -> str:
    """Evaluate a parsed f-string: literal parts as they are, fields from ``values``."""
    out = []
    for part in template:
        if isinstance(part, str):
            out.append(part)
            continue
        name, conversion = part
        value = values[name]
        out.append(repr(value) if conversion == 114 else ascii(value) if conversion == 97 else format(str(value)))
    return "".join(out)


def _where(origin: str, node: ast.AST | None) -> str:
    return f"{origin}:{node.lineno}" if node is not None and hasattr(node, "lineno") else origin


def _parse(source: str, origin: str) -> ast.Module:
    try:
        return ast.parse(source, filename=origin)
    except SyntaxError as exc:
        raise ProtocolError(f"{origin}:{exc.lineno}: not valid Python ({exc.msg})") from None


def _template(node: ast.AST, params: tuple[str, ...], origin: str, field: str) -> Template:
    """The parts of an f-string (or plain string) whose fields are bare parameter names."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return (node.value,)
    if not isinstance(node, ast.JoinedStr):
        raise ProtocolError(f"{_where(origin, node)}: {field}: expected an f-string, got {type(node).__name__}")
    parts: list[Union[str, Field]] = []
    for value in node.values:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            parts.append(value.value)
        elif isinstance(value, ast.FormattedValue):
            if not isinstance(value.value, ast.Name) or value.value.id not in params:
                raise ProtocolError(f"{_where(origin, value)}: {field}: a field must be one of the parameters "
                                    f"{', '.join(params)}, got {ast.unparse(value.value)!r}")
            if value.format_spec is not None:
                raise ProtocolError(f"{_where(origin, value)}: {field}: format specs are not supported "
                                    f"({{{ast.unparse(value.value)}:...}})")
            parts.append((value.value.id, value.conversion))
        else:  # pragma: no cover - the grammar allows nothing else in a JoinedStr
            raise ProtocolError(f"{_where(origin, value)}: {field}: unexpected f-string part")
    return tuple(parts)


def _language_choice(ret: ast.Return, origin: str, field: str) -> tuple[str, str]:
    """``return ZH if language == "zh" else EN`` → the two variable names (zh, en)."""
    node = ret.value
    ok = (isinstance(node, ast.IfExp) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1
          and isinstance(node.test.ops[0], ast.Eq) and isinstance(node.test.left, ast.Name)
          and node.test.left.id == "language" and isinstance(node.test.comparators[0], ast.Constant)
          and node.test.comparators[0].value == "zh" and isinstance(node.body, ast.Name)
          and isinstance(node.orelse, ast.Name))
    if not ok:
        raise ProtocolError(f"{_where(origin, ret)}: {field}: expected `return ZH if language == \"zh\" else EN` "
                            f"(two variable names), got `{ast.unparse(ret)}`")
    return node.body.id, node.orelse.id  # type: ignore[union-attr]


@dataclass(frozen=True)
class PromptFunctions:
    """The six templates of an official-shaped prompt file: ``templates[(turn, language)]``."""

    templates: dict[tuple[str, str], Template]
    origin: str
    sha256: str

    def render(self, turn: str, language: str, **values: str) -> str:
        """What the prompt function of ``turn`` returns for these arguments (``language == "zh"`` picks zh)."""
        return render(self.templates[(turn, "zh" if language == "zh" else "en")], values)


def parse_prompt_functions(source: str, origin: str = "<prompts>") -> PromptFunctions:
    """Read the three prompt functions' English and Chinese templates from source, without running it."""
    tree = _parse(source, origin)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    templates: dict[tuple[str, str], Template] = {}
    for turn, name, params in PROMPT_FUNCTIONS:
        fn = functions.get(name)
        if fn is None:
            raise ProtocolError(f"{origin}: no top-level function {name}({', '.join(params)})")
        got = tuple(a.arg for a in fn.args.args)
        if got != params or fn.args.vararg or fn.args.kwarg or fn.args.kwonlyargs or fn.args.defaults:
            raise ProtocolError(f"{_where(origin, fn)}: {name}: expected parameters ({', '.join(params)}), "
                                f"got ({ast.unparse(fn.args)})")
        assigned: dict[str, ast.AST] = {}
        returns = []
        for stmt in fn.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                assigned[stmt.targets[0].id] = stmt.value
            elif isinstance(stmt, ast.Return):
                returns.append(stmt)
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue  # a docstring
            else:
                raise ProtocolError(f"{_where(origin, stmt)}: {name}: unexpected statement `{ast.unparse(stmt)[:80]}` "
                                    "(expected template assignments and one return)")
        if len(returns) != 1:
            raise ProtocolError(f"{_where(origin, fn)}: {name}: expected exactly one return statement, "
                                f"got {len(returns)}")
        text_params = tuple(p for p in params if p != "language")
        for language, var in zip(("zh", "en"), _language_choice(returns[0], origin, name)):
            if var not in assigned:
                raise ProtocolError(f"{_where(origin, returns[0])}: {name}: returns {var}, which is not assigned "
                                    "a string in the function")
            templates[(turn, language)] = _template(assigned[var], text_params, origin, f"{name}.{var}")
    return PromptFunctions(templates=templates, origin=origin, sha256=sha256_bytes(source.encode("utf-8")))


def parse_meta_instruction(source: str, origin: str = "<model.py>") -> str:
    """The default ``meta_instruction`` of ``InternLMChat7B.__init__``, read without running the file."""
    tree = _parse(source, origin)
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == TEMPLATE_CLASS), None)
    if cls is None:
        raise ProtocolError(f"{origin}: no top-level class {TEMPLATE_CLASS}")
    init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if init is None:
        raise ProtocolError(f"{_where(origin, cls)}: {TEMPLATE_CLASS} has no __init__")
    positional = init.args.posonlyargs + init.args.args
    defaults = dict(zip([a.arg for a in positional][len(positional) - len(init.args.defaults):], init.args.defaults))
    defaults.update({a.arg: d for a, d in zip(init.args.kwonlyargs, init.args.kw_defaults) if d is not None})
    node = defaults.get("meta_instruction")
    if node is None:
        raise ProtocolError(f"{_where(origin, init)}: {TEMPLATE_CLASS}.__init__ has no default for meta_instruction")
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        raise ProtocolError(f"{_where(origin, node)}: {TEMPLATE_CLASS}.__init__ meta_instruction default: "
                            f"expected a string literal, got `{ast.unparse(node)[:80]}`")
    return node.value


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ProtocolError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load_prompt_functions(path: str | Path | None = None, *, allow_unpinned: bool = False) -> PromptFunctions:
    """The official prompt functions: from the cache (``path=None``, fetched on first use) or a local file.

    A local file must have the pinned sha256 unless ``allow_unpinned``.
    """
    if path is None:
        pin, cached = ensure(PROMPTS)
        return parse_prompt_functions(_read_text(cached), f"{cached} ({pin.label})")
    path = Path(path)
    text = _read_text(path)
    digest = sha256_bytes(text.encode("utf-8"))
    pin = pin_of_kind(PROMPTS)
    if digest != pin.sha256 and not allow_unpinned:
        raise ProtocolError(f"{path}: sha256 {digest} is not the pinned prompt file's ({pin.label}, sha256 "
                            f"{pin.sha256}); pass --allow-unpinned-prompts to use it anyway")
    return parse_prompt_functions(text, str(path))


def load_meta_instruction() -> tuple[str, PinnedFile]:
    """InternLM's default meta instruction from the cached LMDeploy ``model.py`` (fetched on first use)."""
    pin, cached = ensure(CHAT_TEMPLATE)
    return parse_meta_instruction(_read_text(cached), f"{cached} ({pin.label})"), pin



@dataclass(frozen=True)
class RewriteRules:
    """The official splitter's text rewrites, as ``(pattern, replacement)`` pairs for ``re.sub``, in order.

    ``before``: applied to the whole response before it is split; ``after``:
    applied to each stripped sentence. They change the sentence text the judge
    reads (``J.K.`` becomes ``J. K.``), never our spans.
    """

    before: tuple[tuple[str, str], ...]
    after: tuple[tuple[str, str], ...]
    origin: str
    sha256: str


def _re_sub_rule(stmt: ast.stmt, origin: str) -> tuple[str, str] | None:
    """``text = re.sub(PATTERN, REPLACEMENT, text)`` with literal strings → the pair; a docstring or
    comment-only expression → None; anything else is an error."""
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return None
    call = stmt.value if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None
    ok = (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "sub"
          and isinstance(call.func.value, ast.Name) and call.func.value.id == "re" and len(call.args) == 3
          and not call.keywords and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args[:2]))
    if not ok:
        raise ProtocolError(f"{_where(origin, stmt)}: {REWRITE_FUNCTION}: expected `text = re.sub(PATTERN, "
                            f"REPLACEMENT, text)` with literal strings, got `{ast.unparse(stmt)[:80]}`")
    return call.args[0].value, call.args[1].value


def parse_rewrite_rules(source: str, origin: str = "<utils.py>") -> RewriteRules:
    """The rules of ``sentence_tokenize_process_dot(text, recover)``, read without running the file: its
    ``if not recover:`` branch (before the split) and its ``else:`` branch (after)."""
    tree = _parse(source, origin)
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == REWRITE_FUNCTION), None)
    if fn is None:
        raise ProtocolError(f"{origin}: no top-level function {REWRITE_FUNCTION}")
    branch = next((n for n in fn.body if isinstance(n, ast.If)), None)
    negated = branch is not None and isinstance(branch.test, ast.UnaryOp) and isinstance(branch.test.op, ast.Not)
    if branch is None or not branch.orelse:
        raise ProtocolError(f"{_where(origin, fn)}: {REWRITE_FUNCTION}: expected `if not recover: ... else: ...`")
    forward, back = (branch.body, branch.orelse) if negated else (branch.orelse, branch.body)
    rules = []
    for body in (forward, back):
        found = tuple(r for r in (_re_sub_rule(stmt, origin) for stmt in body) if r is not None)
        if not found:
            raise ProtocolError(f"{_where(origin, branch)}: {REWRITE_FUNCTION}: a branch without rules")
        rules.append(found)
    return RewriteRules(before=rules[0], after=rules[1], origin=origin, sha256=sha256_bytes(source.encode("utf-8")))


def load_rewrite_rules() -> RewriteRules:
    """The official splitter's rewrite rules from the cached ``utils.py`` (fetched on first use)."""
    pin, cached = ensure(SPLITTER)
    return parse_rewrite_rules(_read_text(cached), f"{cached} ({pin.label})")
