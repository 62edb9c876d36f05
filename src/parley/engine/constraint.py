"""Structured output: a `Grammar` (sampling.py) compiled by llguidance into a matcher per request, whose token
mask is written into llama.cpp's logits in place, before the request's native sampler chain draws from them.

    compile (caller's thread, at Scheduler.submit)   Grammar -> llguidance grammar -> LLMatcher (cached by
                                                     grammar, deep-copied per request); errors: InvalidRequest,
                                                     param "grammar", naming the kind and what is wrong
    each token (scheduler thread)                    mask -> logits of the disallowed tokens to -inf -> the
                                                     native chain samples -> accept(token) -> done?

Why llguidance (scripts/constraint-engines, SmolLM2's 49,152-token vocabulary, one stream, greedy, schemas
flat / nested with enums and bounded arrays / anyOf / $ref; December 2026, Intel Xeon, 2 cores shared with
other work, so tok/s swing run to run; the constraint's own time per token is the steadier figure):

    engine                          constraint us/token     decode tok/s vs none     what it refuses
    llama.cpp grammar in the chain  7,300-11,000            0.49-0.89x (and 1.56x    not, if/then (AssertionError),
      (GBNF, json_schema_to_gbnf)                           on one noisy row)        recursive $ref (KeyError);
                                                                                     ignores uniqueItems,
                                                                                     dependentRequired silently
    llama.cpp grammar, llama-server 1,000-2,100             0.96-1.23x (noise)       as above
      style (check the one token,
      filter all only when refused)
    llguidance 1.9.1                380-1,300 in the loop,  0.98-1.16x (noise);      not, if/then/else,
                                    ~70 alone (mask 30,     estimated from the       uniqueItems,
                                    apply 28, accept 8)     share of a decode step:  dependentRequired, remote
                                                            >= 0.96x                 $ref: each an error
    xgrammar 0.2.9                  300-820                 1.00-1.28x (noise)       nothing: not, if/then,
                                                                                     uniqueItems, remote $ref
                                                                                     are silently ignored

llguidance and xgrammar cost the same per token here, 10-30x less than llama.cpp's grammar sampler over the
whole vocabulary; llguidance refuses what it cannot enforce (so "an unsupported feature is a 400 naming it"
holds), where xgrammar accepts a schema and may then write output that does not validate; and llguidance is one
wheel with no dependencies, where xgrammar imports torch and transformers. Compile: ~1 ms per schema (cached
here by grammar), the tokenizer once per engine 0.3-0.5 s (on the first constrained request).

What parley asks of the JSON (so a 135M model does not wander): objects take only the properties they name
unless the schema says `additionalProperties` / `patternProperties` (OpenAI's strict mode; a schema without
closed objects let SmolLM2 add keys until max_tokens), and whitespace is json.dumps' (", " and ": ", no
newlines), so the reply is one line of canonical JSON.
"""

from __future__ import annotations

import collections
import json
import re
import threading
import warnings

import numpy as np

from parley.errors import InvalidRequest, shorten
from parley.sampling import Grammar

PARAM = "grammar"
CACHE_GRAMMARS = 64           # compiled grammars kept (an agent loop sends the same schema every round)
_NEG_INF = np.float32("-inf")
# json.dumps' separators, no other whitespace: one canonical line (see the module docstring)
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# keywords whose value is a schema, a list of schemas, or a map of schemas: where closing objects recurses
_SUB_SCHEMA = ("items", "additionalItems", "contains", "not", "if", "then", "else", "propertyNames",
               "unevaluatedItems", "additionalProperties")
_SUB_LIST = ("anyOf", "oneOf", "prefixItems")
_SUB_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


class ConstraintError(RuntimeError):
    """The matcher refused a token or entered an error state mid-reply (a grammar past llguidance's limits):
    the request fails alone."""


class Constraint:
    """One request's matcher. `apply` masks the logits of the next token, `accept` advances by the sampled token;
    `done` once nothing more may follow (the JSON value closed), `accepting` while the reply may end here."""

    __slots__ = ("_m", "_mask", "_n")

    def __init__(self, matcher, n_vocab: int):
        self._m = matcher
        self._n = n_vocab
        self._mask = np.empty((n_vocab + 31) // 32, dtype=np.int32)   # one bit per token, little-endian

    def apply(self, logits: np.ndarray) -> None:
        """Set every token the grammar does not allow next to -inf, in place (`logits`: n_vocab float32)."""
        m = self._m
        m.unsafe_compute_mask_ptr(self._mask.ctypes.data, self._mask.nbytes)
        if m.is_error():
            raise ConstraintError(f"the grammar failed mid-reply: {_one_line(m.get_error())}")
        banned = np.unpackbits(self._mask.view(np.uint8), count=self._n, bitorder="little").view(bool)
        np.logical_not(banned, out=banned)
        np.copyto(logits, _NEG_INF, where=banned)

    def accept(self, token: int) -> None:
        if not self._m.consume_token(token):
            raise ConstraintError(f"the grammar refused token {token}: {_one_line(self._m.get_error())}")

    @property
    def done(self) -> bool:
        return self._m.is_stopped()

    @property
    def accepting(self) -> bool:
        return self._m.is_accepting()


class GrammarCompiler:
    """Compiles Grammars for one engine's vocabulary. Any thread: the tokenizer is built once under a lock (from
    llama.cpp's read-only vocabulary calls), the cache is locked, matchers are built outside the lock."""

    def __init__(self, vocab, n_vocab: int, eog_ids):
        self._vocab = vocab
        self._n_vocab = n_vocab
        self._eog = sorted(eog_ids)
        self._tokenizer = None
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[Grammar, object] = collections.OrderedDict()

    def tokenizer(self):
        with self._lock:
            if self._tokenizer is None:
                from llguidance.llamacpp import lltokenizer_from_vocab

                # the end-of-turn tokens are what the mask lets through once the grammar may end; it reads each
                # token's attributes through a call llama-cpp-python marks deprecated (a warning per token)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._tokenizer = lltokenizer_from_vocab(self._vocab, n_vocab=self._n_vocab,
                                                             eos_token=self._eog)
            return self._tokenizer

    def compile(self, grammar: Grammar) -> Constraint:
        """A fresh Constraint for one request. Raises InvalidRequest (param "grammar") naming what is wrong."""
        with self._lock:
            template = self._cache.get(grammar)
            if template is not None:
                self._cache.move_to_end(grammar)
                return Constraint(template.deep_copy(), self._n_vocab)
        template = self._matcher(grammar)
        with self._lock:
            self._cache[grammar] = template
            while len(self._cache) > CACHE_GRAMMARS:
                self._cache.popitem(last=False)
            return Constraint(template.deep_copy(), self._n_vocab)

    def _matcher(self, grammar: Grammar):
        import llguidance as llg

        spec = llguidance_grammar(grammar)
        limits = llg.LLParserLimits(verbose_errors=False)   # no grammar dump in a client's error message
        m = llg.LLMatcher(self.tokenizer(), spec, log_level=0, limits=limits)
        if m.is_error():
            raise InvalidRequest(_explain(grammar.kind, m.get_error()), param=PARAM)
        return m


def llguidance_grammar(grammar: Grammar) -> str:
    """The llguidance grammar text for `grammar` (not yet checked against a vocabulary)."""
    import llguidance as llg

    kind, source = grammar.kind, grammar.source
    if kind == "json_object":
        return llg.LLMatcher.grammar_from_json_schema({"type": "object"}, overrides=_JSON_OPTIONS)
    if kind == "json_schema":
        try:
            schema = json.loads(source)
        except (ValueError, RecursionError) as e:
            raise InvalidRequest(f"json_schema is not valid JSON: {shorten(e, 120)}", param=PARAM) from None
        if not isinstance(schema, dict):
            raise InvalidRequest(f"json_schema must be a JSON object (a JSON Schema), got {_json_type(schema)}",
                                 param=PARAM)
        try:
            return llg.LLMatcher.grammar_from_json_schema(close_objects(schema), overrides=_JSON_OPTIONS)
        except (ValueError, RecursionError) as e:
            raise InvalidRequest(_explain(kind, str(e)), param=PARAM) from None
    if kind == "regex":
        return llg.LLMatcher.grammar_from_regex(source)
    if kind == "lark":
        return llg.LLMatcher.grammar_from_lark(source)
    from llguidance.gbnf_to_lark import gbnf_to_lark

    try:
        return llg.LLMatcher.grammar_from_lark(gbnf_to_lark(source))
    except Exception as e:  # the translator raises bare Exceptions (an unknown rule, a syntax error)
        raise InvalidRequest(_explain(kind, str(e)), param=PARAM) from None


def close_objects(schema, *, close: bool = True):
    """A copy of `schema` in which every object schema that names its `properties` and says nothing about others
    (`additionalProperties`, `patternProperties`, `unevaluatedProperties`) takes no others. allOf branches are
    left open (closing each would forbid the others' properties); what they hold is closed as usual."""
    if isinstance(schema, list):
        return [close_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SUB_SCHEMA:
        if isinstance(out.get(key), (dict, list)):
            out[key] = close_objects(out[key])
    for key in _SUB_LIST:
        if isinstance(out.get(key), list):
            out[key] = [close_objects(s) for s in out[key]]
    for key in _SUB_MAP:
        if isinstance(out.get(key), dict):
            out[key] = {k: close_objects(v) for k, v in out[key].items()}
    if isinstance(out.get("allOf"), list):
        out["allOf"] = [close_objects(s, close=False) for s in out["allOf"]]
    if close and isinstance(out.get("properties"), dict) and not any(
            k in out for k in ("additionalProperties", "patternProperties", "unevaluatedProperties")):
        out["additionalProperties"] = False
    return out


_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[(.*?)\]")


def _explain(kind: str, message: str) -> str:
    """llguidance's message as a client reads it: "json_schema: 'not' is not supported", or the kind and the
    first lines of what it said."""
    found = _UNIMPLEMENTED.search(message)
    if found:
        keys = [k.strip().strip('"') for k in found.group(1).split(",") if k.strip()]
        names = ", ".join(f"'{k}'" for k in keys)
        return f"{kind}: {names} {'is' if len(keys) == 1 else 'are'} not supported"
    if "is not present in a registry" in message:
        return f"{kind}: only local $ref ('#/...') is supported: {shorten(_one_line(message), 160)}"
    return f"{kind}: {shorten(_one_line(message), 300)}"


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _json_type(value) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
