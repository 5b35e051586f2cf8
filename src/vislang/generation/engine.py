"""A continuous-batching engine: requests join and leave between decode steps.

One background thread owns the model. Callers `submit` a conversation and get a RequestHandle
at once: a future (`result()`), a blocking iterator of text deltas and an async one, and
`cancel()`. Each step the engine admits waiting requests into free KV slots (one prefill each,
its first token sampled at once), then decodes one token for every running request in a single
batched forward, each row with its own sampling settings, seed and limits. A finished or
cancelled request gives its slot back before the next step.

Prompts are tokenized and images decoded in the caller's thread, so bad input fails in `submit`
and never reaches the model thread. A repeated image skips the vision tower (feature cache) and,
when the conversation up to it is the same, the prefill of everything up to it (prefix cache).

A model whose text reads images through cross-attention instead of in its token stream (IDEFICS,
vislang's Flamingo; see models/cross_media.py) implements two hooks: `decode_media(ids,
image_features)`, what a request's generated tokens read (kept with its slot), and
`decode_step(tokens, mask, positions, cache, media)`, one decode step whose rows read their own.
Its prefill takes the cached features like any model's; it has no
prefix cache (a prompt's tail would need the images too).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import torch

from ..errors import PromptTooLongError, VislangError
from ..models.chat import split_messages
from .caches import LRUBytes, media_key, prefix_key
from .detokenize import IncrementalDetokenizer, StopStrings
from .grammar import Constraint, Grammars
from .quantize import prefill
from .sampling import SamplingParams, next_token, penalize_repetition, token_logprobs
from .slots import SlotCache
from .threads import release_idle_workers, single_threaded

log = logging.getLogger(__name__)
_END = object()


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS or a stop string), "length", "cancelled"
    usage: dict
    ttft_s: float = 0.0  # submit -> first token
    # per generated token, when asked (SamplingParams.logprobs): {"id", "logprob", "top": [(id, logprob)]}
    logprobs: list[dict] | None = None
    total_s: float = 0.0
    cached: dict = field(default_factory=dict)  # image features / prompt prefix reused

    def __str__(self) -> str:
        return self.text


class RequestHandle:
    """What a caller holds for one request; the engine thread writes, callers read."""

    def __init__(self, rid: int, params: SamplingParams):
        self.id, self.params = rid, params
        self._cond = threading.Condition()
        self._deltas: list[str] = []
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self._completion: Completion | None = None
        self._error: BaseException | None = None
        self.cancelled = False
        self.token_logprobs: list[dict] = []  # grows as tokens are accepted (when asked for)

    # --- caller side ---

    def cancel(self) -> None:
        """Stop generating; the slot is freed before the engine's next step."""
        self.cancelled = True

    @property
    def done(self) -> bool:
        return self._completion is not None or self._error is not None

    def result(self, timeout: float | None = None) -> Completion:
        with self._cond:
            if not self._cond.wait_for(lambda: self.done, timeout):
                raise TimeoutError(f"request {self.id} not finished after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._completion

    def __iter__(self):
        i = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda seen=i: seen < len(self._deltas) or self.done)
                chunk, finished = self._deltas[i:], self.done  # finishing comes after the last delta
            i += len(chunk)
            yield from chunk
            if finished:
                break
        if self._error is not None:
            raise self._error

    async def __aiter__(self):
        loop, inbox = asyncio.get_running_loop(), asyncio.Queue()
        with self._cond:
            backlog, finished = list(self._deltas), self.done
            if not finished:
                self._subscribers.append((loop, inbox))
        for delta in backlog:
            yield delta
        while not finished:
            item = await inbox.get()
            if item is _END:
                break
            yield item
        if self._error is not None:
            raise self._error

    # --- engine side ---

    def _emit(self, delta: str) -> None:
        if not delta:
            return
        with self._cond:
            self._deltas.append(delta)
            for loop, inbox in self._subscribers:
                loop.call_soon_threadsafe(inbox.put_nowait, delta)
            self._cond.notify_all()

    def _finish(self, completion: Completion | None = None, error: BaseException | None = None) -> None:
        with self._cond:
            self._completion, self._error = completion, error
            for loop, inbox in self._subscribers:
                loop.call_soon_threadsafe(inbox.put_nowait, _END)
            self._cond.notify_all()


@dataclass
class _Prepared:
    """A request as the caller's thread leaves it: token ids and per-image inputs, nothing run yet."""

    handle: RequestHandle
    ids: list[int]
    images: list[tuple[str, dict]]  # (pixel hash, model inputs) per image
    submitted: float
    # the prompt up to its last image token, what a repeat of the same images and context shares:
    # its length and prefix-cache key (0, None without images)
    prefix: int = 0
    prefix_key: str | None = None
    constraint: Constraint | None = None  # the grammar the answer must follow, if any
    feature_inputs: dict = field(default_factory=dict)  # what every image's features read beside it


class _Running:
    """A request in a slot: its decoding state."""

    def __init__(self, req: _Prepared, slot: int, tokenizer, device):
        self.req, self.slot = req, slot
        p = req.handle.params
        self.generator = torch.Generator().manual_seed(p.seed) if p.seed is not None else None
        self.new: list[int] = []
        self.seen = torch.tensor([req.ids], dtype=torch.long, device=device)  # for the repetition penalty
        self.detok = IncrementalDetokenizer(tokenizer)
        self.stops = StopStrings(p.stop)
        self.text = ""
        self.first_token_at = 0.0
        self.eos = False
        self.cached = {"image_features": 0, "prefix_tokens": 0}
        self.media = None  # what its generated tokens cross-attend to (cross-attention models)


def padding_groups(runs: list, waste: float = 0.25, slack: int = 64) -> list[list]:
    """Requests to prefill together, as groups of similar length: padding a short prompt to a long
    one's length costs the long one's compute (and a T x T mask), so a group takes a prompt only
    while its padded size stays within `waste` (plus `slack` tokens) of its real tokens."""
    groups: list[list] = []
    for run in sorted(runs, key=lambda r: len(r.req.ids)):
        group = groups[-1] if groups else None
        if group is not None:
            n = len(run.req.ids)  # the longest so far, since they come sorted
            real = sum(len(r.req.ids) for r in group) + n
            if n * (len(group) + 1) <= (1 + waste) * real + slack:
                group.append(run)
                continue
        groups.append([run])
    return groups


class Engine:
    """Continuous batching over a ChatMixin model (the default model, LLaVA, LLaVA-NeXT, Qwen2-VL,
    IDEFICS)."""

    def __init__(
        self,
        model,
        max_batch: int = 8,
        max_len: int | None = None,
        feature_cache_bytes: int = 256 << 20,
        prefix_cache_bytes: int = 256 << 20,
        max_images: int = 8,
        kv_budget_bytes: int | None = None,
    ):
        """max_len: tokens a sequence may hold, prompt and answer (default: the model's context).
        kv_budget_bytes: the most the KV cache may take. Its capacity is the longest sequence's for
        every slot, so the budget bounds the longest sequence: a request longer is refused in `submit`."""
        self.model = model.eval()
        self.lm = model.language_model
        self.tokenizer = model.tokenizer
        self.max_batch, self.max_images = max_batch, max_images
        context = self.lm.cfg.max_position_embeddings
        self.max_len = min(max_len or context, context)
        self.kv_budget_bytes = kv_budget_bytes
        self.device = self.lm.embed_tokens.weight.device
        self.eos = set(model.default_eos())
        self.cross_media = hasattr(model, "decode_step")  # images read by cross-attention (see above)
        self._eos_ids = torch.tensor(sorted(self.eos), dtype=torch.long, device=self.device)
        self.grammars = Grammars(self.tokenizer, self.lm.cfg.vocab_size, sorted(self.eos))
        self.features = LRUBytes(feature_cache_bytes)
        self.prefixes = LRUBytes(prefix_cache_bytes)
        self.cache = SlotCache.for_decoder(self.lm, max_batch, self.max_len)
        # the longest sequence allowed: the context, or less where the KV budget says so (every slot
        # holds as many positions as the longest, so the budget bounds that length)
        self.token_limit = self.max_len
        if kv_budget_bytes is not None:
            per_block = self.cache.bytes_for(SlotCache.BLOCK)
            self.token_limit = min(self.max_len, kv_budget_bytes // per_block * SlotCache.BLOCK)
        self.cache.limit = self.token_limit  # growth never passes it
        self.slots: list[_Running | None] = [None] * max_batch
        self._followers: dict[int, list[_Running]] = {}  # id(leader) -> requests sharing its prefill
        self.waiting: queue.Queue[_Prepared] = queue.Queue()
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._arrived = threading.Event()
        self._threads = torch.get_num_threads()  # the creator's setting, for the model thread
        release_idle_workers()  # see threads.py: idle pools elsewhere slow the model thread
        self._thread = threading.Thread(target=self._loop, name="vislang-engine", daemon=True)
        self._thread.start()

    # --- caller side ---

    def submit(
        self,
        messages: list[dict],
        params: SamplingParams | None = None,
        tools: list[dict] | None = None,
        **sampling,
    ) -> RequestHandle:
        """Queue a conversation; errors in the input (image, length) raise here, in the caller.
        tools: OpenAI-style function definitions the prompt offers (see processing/tools.py)."""
        if self._stop.is_set():
            raise VislangError("the engine is shut down")
        params = params or SamplingParams(**sampling)
        media, clean = split_messages(messages)
        if len(media) > self.max_images:
            raise VislangError(
                f"{len(media)} images or videos in one request; at most {self.max_images} allowed"
            )
        images, counts = [], []
        extra = self.model.media_inputs_for(clean) if media else {}  # e.g. InstructBLIP's instruction
        with single_threaded():  # no OpenMP pool in callers' threads (see threads.py)
            for item in media:
                item = self.model.load_media(item)
                inputs, (count,) = self.model.prepare_media([item])
                images.append((media_key(item, {**inputs, **extra}), inputs))
                counts.append(count)
        ids = self.model.prompt_ids(clean, counts, tools=tools)
        if params.max_new_tokens is None:  # until the context (or the KV budget) ends
            params = dataclasses.replace(params, max_new_tokens=max(0, self.token_limit - len(ids)))
        if len(ids) + params.max_new_tokens > self.token_limit or len(ids) >= self.token_limit:
            limit = f"the engine's {self.token_limit}-token context"
            if self.token_limit < self.max_len:
                limit += f" (what a KV budget of {self.kv_budget_bytes} bytes allows {self.max_batch} slots)"
            raise PromptTooLongError(
                f"prompt of {len(ids)} tokens plus {params.max_new_tokens} new ones exceeds {limit}",
                context=self.token_limit,
                prompt_tokens=len(ids),
                completion_tokens=params.max_new_tokens,
            )
        constraint = None
        if params.json_schema is not None or params.json_object:
            constraint = self.grammars.json(params.json_schema)  # a bad schema fails here, in the caller
        handle = RequestHandle(next(self._ids), params)
        req = _Prepared(handle, ids, images, time.perf_counter(), constraint=constraint, feature_inputs=extra)
        if images and not self.cross_media:
            placeholders = set(self.model.media_token_ids)
            req.prefix = max(i for i, t in enumerate(ids) if t in placeholders) + 1
            req.prefix_key = prefix_key(ids[: req.prefix], [k for k, _ in images])
        self.waiting.put(req)
        self._arrived.set()
        return handle

    def generate(self, messages: list[dict], **sampling) -> Completion:
        return self.submit(messages, **sampling).result()

    @property
    def busy_slots(self) -> int:
        return sum(s is not None for s in self.slots)

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    # --- the model thread ---

    def _loop(self) -> None:
        torch.set_num_threads(self._threads)  # a new thread starts from OpenMP's default
        with torch.inference_mode():
            while not self._stop.is_set():
                self._admit()
                if not any(self.slots):
                    self.cache.shrink_if_idle()
                    self._arrived.wait(0.1)  # idle: sleep until a request arrives
                    self._arrived.clear()
                    continue
                try:
                    self._step()
                except Exception as e:  # a failed batch fails its requests, never the engine
                    log.exception("decode step failed")
                    for run in [r for r in self.slots if r is not None]:
                        self._release(run, error=e)
        for run in [r for r in self.slots if r is not None]:
            self._release(run, error=VislangError("the engine shut down"))

    def _admit(self) -> None:
        """Give waiting requests the free slots and prefill them: those arriving together in one
        padded batch (prefill is compute-bound, so a batch is cheaper than its rows apart), a
        request whose image and context were seen before alone (only its tail runs)."""
        joining, free = [], self.slots.count(None)
        while len(joining) < free:
            try:
                req = self.waiting.get_nowait()
            except queue.Empty:
                break
            if req.handle.cancelled:
                req.handle._finish(Completion("", [], "cancelled", self._usage(req, 0)))
                continue
            slot = self.slots.index(None)
            self.slots[slot] = _Running(req, slot, self.tokenizer, self.device)
            joining.append(self.slots[slot])
        joining = self._share_prefills(joining)
        with prefill():  # however short (a tail after a cached prefix): reduced layers' fp32 weights
            fresh = [run for run in joining if self._stored_prefix(run) is None]
            for group in padding_groups(fresh):
                if len(group) < 2:
                    continue
                try:
                    logits = self._prefill_together(group)
                except Exception:
                    log.exception("batched prefill failed; prefilling its requests one by one")
                else:
                    joining = [run for run in joining if run not in group]
                    self._start(group, logits)
            for run in joining:
                try:
                    logits = self._prefill(run)
                except Exception as e:
                    log.exception("prefill failed")
                    for follower in self._followers.pop(id(run), []):
                        self._release(follower, error=e)
                    self._release(run, error=e)
                    continue
                self._start([run], logits)

    def _share_prefills(self, joining: list[_Running]) -> list[_Running]:
        """Requests with the same prompt and images (the n choices of one request, or the same
        question twice) are prefilled once: the others wait as followers of the first, whose KV they
        copy. Returns the requests that still need their own prefill."""
        leaders: dict[tuple, _Running] = {}
        own = []
        for run in joining:
            key = (tuple(run.req.ids), tuple(k for k, _ in run.req.images))
            leader = leaders.setdefault(key, run)
            if leader is run:
                own.append(run)
            else:
                self._followers.setdefault(id(leader), []).append(run)
        return own

    def _start(self, runs: list[_Running], logits: torch.Tensor) -> None:
        """Sample each prefilled request's first token (logits: one row per request), and its
        followers' (who get a copy of its KV first: a finished request frees its slot)."""
        now = time.perf_counter()
        rows = []
        for i, run in enumerate(runs):
            rows.append((run, i))
            for follower in self._followers.pop(id(run), []):
                self.cache.copy_slot(run.slot, follower.slot)
                follower.media = run.media
                follower.cached["prefix_tokens"] = len(follower.req.ids)
                rows.append((follower, i))
        for run, i in rows:
            run.first_token_at = now
            try:
                self._accept(run, self._sample(run, logits[i : i + 1]))
            except Exception as e:
                log.exception("first token failed")
                self._release(run, error=e)

    def _media_inputs(self, runs: list[_Running]) -> dict:
        """What the model needs beside the features (grids, sizes: Qwen2-VL's positions come from
        them), joined over the requests' images and videos in row order."""
        keys = dict.fromkeys(k for run in runs for _, inp in run.req.images for k in inp)
        keys = [k for k in keys if not k.startswith("pixel_values")]
        joined = {}
        for k in keys:
            parts = [inp[k] for run in runs for _, inp in run.req.images if k in inp]
            joined[k] = torch.cat(parts).to(self.device)
        return joined

    def _image_features(self, run: _Running) -> list[torch.Tensor]:
        feats = []
        for key, inputs in run.req.images:
            f = self.features.get(key)
            if f is None:
                inputs = {k: v.to(self.device) for k, v in {**inputs, **run.req.feature_inputs}.items()}
                f = self.model.image_features(**inputs)[0]
                self.features.put(key, f)
            else:
                run.cached["image_features"] += 1
            feats.append(f)
        return feats

    def _stored_prefix(self, run: _Running):
        """The cached KV of this request's prefix, if any (and if a tail is left to prefill)."""
        if run.req.prefix_key is None or run.req.prefix >= len(run.req.ids):
            return None
        return self.prefixes.get(run.req.prefix_key)

    def _prefill(self, run: _Running) -> torch.Tensor:
        ids, view = run.req.ids, self.cache.view(run.slot)
        self.cache.free(run.slot)
        prefix, pkey = run.req.prefix, run.req.prefix_key
        stored = self._stored_prefix(run)
        if stored is not None:
            self.cache.write_prefix(run.slot, stored)
            run.cached["prefix_tokens"] = prefix
            tail = torch.tensor([ids[prefix:]], device=self.device)
            mask = torch.ones(1, len(ids), dtype=torch.long, device=self.device)
            return self.model(input_ids=tail, attention_mask=mask, cache=view, last_only=True).logits[:, -1]
        feats = self._image_features(run) if run.req.images else None
        if self.cross_media:
            run.media = self.model.decode_media(ids, feats)
        input_ids = torch.tensor([ids], device=self.device)
        logits = self.model(
            input_ids=input_ids, cache=view, image_features=feats, last_only=True, **self._media_inputs([run])
        ).logits
        if pkey is not None:
            self.prefixes.put(pkey, self.cache.read_prefix(run.slot, prefix))
        return logits[:, -1]

    def _prefill_together(self, runs: list[_Running]) -> torch.Tensor:
        """Prefill several prompts as one left-padded batch; each slot receives its real tokens."""
        lengths = [len(run.req.ids) for run in runs]
        T = max(lengths)
        input_ids = torch.zeros(len(runs), T, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, run in enumerate(runs):
            input_ids[row, T - lengths[row] :] = torch.tensor(run.req.ids)
            mask[row, T - lengths[row] :] = 1
        per_run = [self._image_features(run) for run in runs]
        if self.cross_media:
            for run, own in zip(runs, per_run):
                run.media = self.model.decode_media(run.req.ids, own)
        feats = [f for own in per_run for f in own]  # in row order
        for run in runs:
            self.cache.free(run.slot)
        logits = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=mask.to(self.device),
            cache=self.cache.batch_view([run.slot for run in runs], lengths),
            image_features=feats or None,
            last_only=True,
            **self._media_inputs(runs),
        ).logits[:, -1]
        for run in runs:
            if run.req.prefix_key is not None:
                self.prefixes.put(run.req.prefix_key, self.cache.read_prefix(run.slot, run.req.prefix))
        return logits

    def _sample(self, run: _Running, logits: torch.Tensor) -> int:
        p = run.req.handle.params
        raw = logits
        logits = penalize_repetition(logits, run.seen, p.repetition_penalty)
        if len(run.new) < p.min_new_tokens:
            logits = logits.index_fill(-1, self._eos_ids, float("-inf"))
        constraint = run.req.constraint
        if constraint is not None:
            logits = constraint.mask(logits)
        token = int(next_token(logits, p, run.generator)[0])
        if constraint is not None and token not in self.eos:
            constraint.take(token)
        if p.logprobs is not None and token not in self.eos:
            run.req.handle.token_logprobs.append(token_logprobs(raw, token, p.logprobs))
        return token

    def _step(self) -> None:
        for run in [r for r in self.slots if r is not None]:
            if run.req.handle.cancelled:
                self._release(run, reason="cancelled")
        self._compact()
        runs = [r for r in self.slots if r is not None]  # rows 0..n-1, after compacting
        if not runs:
            return
        tokens = torch.tensor([[run.new[-1]] for run in runs], dtype=torch.long, device=self.device)
        positions, mask = self.cache.begin_step(len(runs))
        mask, positions = mask.to(self.device), positions.to(self.device)
        if self.cross_media:
            media = [run.media for run in runs]
            logits = self.model.decode_step(tokens, mask, positions, self.cache, media)
        else:
            out = self.lm(input_ids=tokens, attention_mask=mask, position_ids=positions, cache=self.cache)
            logits = out[:, -1]
        for i, run in enumerate(runs):
            self._accept(run, self._sample(run, logits[i : i + 1]))

    def _compact(self) -> None:
        """Move the last busy slots into the holes finished requests left, so a step computes
        only busy rows (a free row in the middle would cost a full row of matmuls and attention)."""
        while True:
            busy = [i for i, run in enumerate(self.slots) if run is not None]
            holes = [i for i in range(len(busy)) if self.slots[i] is None]
            if not holes:
                return
            src, dst = busy[-1], holes[0]
            run = self.slots[src]
            self.cache.move(src, dst)
            self.slots[dst], self.slots[src], run.slot = run, None, dst

    def _accept(self, run: _Running, token: int) -> None:
        """Take a sampled token: stream its text, or end the request (EOS, stop string, length)."""
        p = run.req.handle.params
        if token in self.eos:
            run.eos = True
            delta = run.stops.push(run.detok.flush()) + run.stops.flush()
            run.text += delta
            run.req.handle._emit(delta)
            return self._release(run, reason="stop")
        run.new.append(token)
        if p.repetition_penalty != 1.0:  # only the penalty reads it: no growing tensor otherwise
            run.seen = torch.cat([run.seen, run.seen.new_tensor([[token]])], dim=1)
        delta = run.stops.push(run.detok.push(token))
        run.text += delta
        run.req.handle._emit(delta)
        if run.stops.stopped:
            return self._release(run, reason="stop")
        if len(run.new) >= p.max_new_tokens:
            delta = run.stops.push(run.detok.flush()) + run.stops.flush()
            run.text += delta
            run.req.handle._emit(delta)
            return self._release(run, reason="length")

    def _release(self, run: _Running, reason: str = "", error: BaseException | None = None) -> None:
        handle = run.req.handle
        self.slots[run.slot] = None
        self.cache.free(run.slot)
        if error is not None:
            return run.req.handle._finish(error=error)
        now = time.perf_counter()
        done = len(run.new) + run.eos  # the EOS token counts, as in chat()
        run.req.handle._finish(
            Completion(
                text=run.text,
                token_ids=list(run.new),
                finish_reason=reason,
                usage=self._usage(run.req, done),
                ttft_s=(run.first_token_at or now) - run.req.submitted,
                total_s=now - run.req.submitted,
                cached=dict(run.cached),
                logprobs=list(handle.token_logprobs) if handle.params.logprobs is not None else None,
            )
        )

    @staticmethod
    def _usage(req: _Prepared, completion_tokens: int) -> dict:
        prompt = len(req.ids)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        }
