"""Generation and chat for the decoder VLMs: prompt building, image placement, decoding."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import PromptTooLongError, VislangError
from ..generation import SamplingParams, generate
from ..processing import LLAVA_FALLBACK_CHAT_TEMPLATE, load_image, render_chat
from ..processing.prompt import expand_media_tokens
from ..processing.tools import conversation_with_tools
from .output import ModelOutput
from .splice import answer_loss, next_token_loss, splice_image_features

MEDIA_OPTIONS = ("min_pixels", "max_pixels", "fps", "max_frames")


@dataclass
class Reply:
    """A chat answer: str(reply) is the text."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    usage: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.text


@dataclass
class Media:
    """One image or video of a conversation: where it comes from and its per-request settings
    (min_pixels / max_pixels, fps, max_frames: for models that read images at native resolution)."""

    kind: str  # "image" or "video"
    source: object
    options: dict = field(default_factory=dict)


def split_messages(messages: list[dict]) -> tuple[list[Media], list[dict]]:
    """Pull the image and video sources out of OpenAI/transformers-style messages.

    Returns the media in order of appearance and the messages with each image or video part reduced
    to {"type": "image"} / {"type": "video"}, the form chat templates expect.
    """
    images, clean = [], []
    for m in messages:
        content = m.get("content")
        rest = {k: v for k, v in m.items() if k != "content"}  # tool_calls, tool_call_id, name, ...
        if isinstance(content, str) or content is None:
            clean.append({**rest, "content": content or ""})
            continue
        parts = []
        for part in content:
            kind = part.get("type")
            if kind == "image":
                src = part.get("image", part.get("url", part.get("path")))
                if src is None:
                    raise VislangError("an image part needs an 'image' (path, bytes, PIL image or array)")
                images.append(Media("image", src, _options(part)))
                parts.append({"type": "image"})
            elif kind == "video":
                src = part.get("video", part.get("url", part.get("path")))
                if src is None:
                    raise VislangError(
                        "a video part needs a 'video' (a file path, bytes or a list of frames)"
                    )
                images.append(Media("video", src, _options(part)))
                parts.append({"type": "video"})
            elif kind == "text":
                parts.append({"type": "text", "text": part.get("text", "")})
            else:
                raise VislangError(f"unknown message part type {kind!r}; use 'text', 'image' or 'video'")
        clean.append({**rest, "content": parts})
    return images, clean


def _options(part: dict) -> dict:
    return {k: part[k] for k in MEDIA_OPTIONS if part.get(k) is not None}


class ChatMixin:
    """Needs: `language_model` (a Decoder), `tokenizer`, `chat_template`, `image_token_id`,
    and either `num_image_tokens()` (one fixed-size input per image) or its own `prepare_images`."""

    fallback_chat_template = LLAVA_FALLBACK_CHAT_TEMPLATE  # for a folder that ships none
    generation_eos: tuple[int, ...] = ()  # generation_config.json's end tokens, when the folder has one
    video_token_id: int | None = None

    def new_cache(self, batch: int, max_len: int):
        return self.language_model.new_cache(batch, max_len)

    def default_eos(self) -> list[int]:
        ids = []
        eos = self.language_model.cfg.eos_token_id
        ids += [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        ids += self.generation_eos
        return sorted(set(ids))

    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        repetition_penalty: float = 1.0,
        min_new_tokens: int = 0,
        **media_inputs,
    ) -> torch.Tensor:
        """New token ids [B, n] for a batch (left-padded when rows differ in length).

        media_inputs: whatever else the model's processor makes (image_grid_thw, pixel_values_videos,
        ...), passed to the prefill."""
        params = SamplingParams(
            max_new_tokens,
            do_sample,
            temperature,
            top_k,
            top_p,
            seed,
            repetition_penalty=repetition_penalty,
            min_new_tokens=min_new_tokens,
        )
        eos = self.default_eos() if eos_token_id is None else eos_token_id
        extra = {"pixel_values": pixel_values, "image_sizes": image_sizes, **media_inputs}
        return generate(self, input_ids, attention_mask, params, eos, pad_token_id, **extra)

    # --- media: what a model that reads videos or per-image settings overrides ---

    def load_media(self, media: Media) -> Media:
        """The media decoded (an RGB PIL image), checked before anything runs."""
        if media.kind != "image":
            raise VislangError(f"{type(self).__name__} reads images only, not {media.kind}s")
        return Media("image", load_image(media.source), media.options)

    def prepare_images(self, images: list) -> tuple[dict, list[int]]:
        """PIL images -> pixels [N, 3, S, S] and each image's placeholder count (num_image_tokens):
        a model with one fixed-size input per image; others override it."""
        pixel_values = self.image_transform.batch(images)
        return {"pixel_values": pixel_values}, [self.num_image_tokens()] * len(images)

    def prepare_media(self, media: list[Media]) -> tuple[dict, list[int]]:
        """Loaded media -> model inputs (tensors of all of them together) and each one's token count."""
        return self.prepare_images([m.source for m in media])

    @property
    def media_token_ids(self) -> tuple[int, ...]:
        """The placeholder ids image (and video) features replace."""
        return (self.image_token_id,)

    def embed(self, input_ids, image_features, prompt: bool = True) -> torch.Tensor:
        """Token embeddings [B, T, D] with the features of every image (and video), given as one list
        in order of appearance, at their placeholders."""
        embeds = self.language_model.embed_tokens(input_ids)
        return splice_image_features(embeds, input_ids, self.media_token_ids, image_features, prompt)

    def forward_spliced(
        self,
        input_ids,
        attention_mask,
        position_ids,
        labels,
        cache,
        image_features,
        last_only,
        pixel_values=None,
        **feature_inputs,
    ) -> ModelOutput:
        """A splice model's forward: each image's features (from its pixels and feature_inputs, unless
        given) at its placeholder tokens, then the language model."""
        if image_features is None and pixel_values is not None and pixel_values.numel() > 0:
            image_features = self.image_features(pixel_values, **feature_inputs)
        embeds = self.embed(input_ids, image_features, prompt=cache is None or cache.length == 0)
        lm_inputs = (embeds, attention_mask, position_ids, cache, last_only)
        return self.run_language_model(*lm_inputs, labels, image_features)

    def run_language_model(
        self, embeds, attention_mask, position_ids, cache, last_only, labels, image_features
    ) -> ModelOutput:
        """The decoder over spliced embeddings [B, T, D], with the training loss when labels are given.

        Training with labels returns the loss alone: only the answer positions go through the
        vocabulary projection, which over every position costs a fifth of a small model's step."""
        if labels is not None and self.training and cache is None:
            hidden = self.language_model(
                inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, logits=False
            )
            loss = answer_loss(self.language_model.lm_head, hidden, labels)
            return ModelOutput(loss=loss, image_features=image_features)
        logits = self.language_model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            last_only=last_only,
        )
        loss = None if labels is None else next_token_loss(logits, labels)
        return ModelOutput(logits=logits, loss=loss, image_features=image_features)

    def build_prompt(self, messages: list[dict]) -> tuple[list[int], dict]:
        """Token ids of the rendered conversation and the image inputs that go with them."""
        if self.tokenizer is None:
            raise VislangError("this model has no tokenizer (tokenizer.json) so it cannot chat")
        media, clean = split_messages(messages)
        inputs, counts = self.prepare_media([self.load_media(m) for m in media]) if media else ({}, [])
        if media:  # what every medium's features read beside its pixels, once per medium
            inputs.update({k: torch.cat([v] * len(media)) for k, v in self.media_inputs_for(clean).items()})
        return self.prompt_ids(clean, counts), inputs

    def media_inputs_for(self, clean_messages: list[dict]) -> dict:
        """Inputs [1, ...] that each medium's features depend on beside the medium itself, from the
        conversation (InstructBLIP: the instruction its Q-Former reads). The engine's feature cache
        keys on them too. Nothing by default."""
        return {}

    def prompt_ids(
        self, clean_messages: list[dict], image_token_counts: list[int], tools: list[dict] | None = None
    ) -> list[int]:
        """Token ids of messages whose image parts are bare {"type": "image"} (and video parts
        {"type": "video"}), each expanded to its number of placeholder tokens, in order."""
        if self.tokenizer is None:
            raise VislangError("this model has no tokenizer (tokenizer.json) so it cannot chat")
        tok = self.tokenizer
        template = self.chat_template or self.fallback_chat_template
        clean_messages, tools = conversation_with_tools(clean_messages, tools, template)
        specials = tok.special_tokens
        text = render_chat(
            template, clean_messages, add_generation_prompt=True, special_tokens=specials, tools=tools
        )
        placeholder = {"image": tok.id_to_token(self.image_token_id)}
        if self.video_token_id is not None:
            placeholder["video"] = tok.id_to_token(self.video_token_id)
        kinds = [
            p["type"]
            for m in clean_messages
            if not isinstance(m.get("content"), str)
            for p in m.get("content") or []
            if p.get("type") in ("image", "video")
        ]
        expected = [placeholder[k] for k in kinds]
        text = expand_media_tokens(text, expected, image_token_counts, known=list(placeholder.values()))
        # a template that writes BOS itself must not get a second one from the tokenizer
        bos = tok.special_tokens.get("bos_token")
        return tok.encode(text, add_special_tokens=not (bos and text.startswith(bos)))

    def training_batch(self, examples: list[tuple[list[dict], str]]) -> dict:
        """(messages, answer) pairs -> a right-padded batch whose labels cover only the answers.

        Each answer ends with the end-of-turn token, so the model learns to stop.
        """
        rows, images = [], []
        end = self.tokenizer.eos_token_id
        for messages, answer in examples:
            ids, inputs = self.build_prompt(messages)
            target = self.tokenizer.encode(answer, add_special_tokens=False) + [end]
            rows.append((ids + target, [-100] * len(ids) + target))
            images.append(inputs)
        T = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else end
        input_ids = torch.full((len(rows), T), pad, dtype=torch.long)
        labels = torch.full((len(rows), T), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for i, (ids, lab) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(lab)] = torch.tensor(lab)
            mask[i, : len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
        batch.update(concat_inputs(images))
        return batch

    def chat(self, messages: list[dict], max_new_tokens: int = 64, **sampling) -> Reply:
        return self.chat_batch([messages], max_new_tokens, **sampling)[0]

    def chat_batch(self, conversations: list[list[dict]], max_new_tokens: int = 64, **sampling):
        """Several conversations decoded together, left-padded into one batch: a list of Reply."""
        prompts = [self.build_prompt(messages) for messages in conversations]
        context = self.language_model.cfg.max_position_embeddings
        for ids, _ in prompts:
            if len(ids) + max_new_tokens > context:
                raise PromptTooLongError(
                    f"prompt of {len(ids)} tokens plus {max_new_tokens} new ones exceeds "
                    f"the {context}-token context"
                )
        T = max(len(ids) for ids, _ in prompts)
        input_ids = torch.zeros(len(prompts), T, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for i, (ids, _) in enumerate(prompts):
            input_ids[i, T - len(ids) :] = torch.tensor(ids)
            mask[i, T - len(ids) :] = 1
        images = concat_inputs([inputs for _, inputs in prompts])
        new = self.generate(input_ids, mask, max_new_tokens=max_new_tokens, **images, **sampling).tolist()
        eos = set(self.default_eos())
        replies = []
        for (ids, _), row in zip(prompts, new):
            end = next((i for i, t in enumerate(row) if t in eos), len(row))
            text = self.tokenizer.decode(row[:end], skip_special_tokens=True).strip()
            done = len(row[: end + 1])
            usage = {"prompt_tokens": len(ids), "completion_tokens": done, "total_tokens": len(ids) + done}
            replies.append(Reply(text, row[:end], usage))
        return replies


def concat_inputs(inputs: list[dict]) -> dict:
    """Per-prompt media inputs joined key by key (pixels, sizes, grids), in order. Token ids of
    different lengths (InstructBLIP's instructions) are right-padded with 0, as their masks say."""
    keys = dict.fromkeys(k for inp in inputs for k in inp)
    return {k: _cat_padded([inp[k] for inp in inputs if k in inp]) for k in keys}


def _cat_padded(parts: list[torch.Tensor]) -> torch.Tensor:
    if all(p.dim() == 2 for p in parts) and len({p.shape[1] for p in parts}) > 1:
        width = max(p.shape[1] for p in parts)
        parts = [torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts]
    return torch.cat(parts)
