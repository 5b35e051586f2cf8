"""Text-only chat turns, so that training on images does not cost the language model its chat.

The questions are a fixed, varied list; the answers are self-distilled: the frozen LM answers each
question once (greedy) before training starts and the pairs are cached in the run directory. Training
on the model's own answers pulls it back towards its own behaviour rather than towards someone
else's, and caching makes the turns, and so a resumed run, identical every time.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CHAT_QUESTIONS = (
    # facts
    "What is the capital of France?",
    "What is the capital of Japan?",
    "What is the largest planet in our solar system?",
    "How many continents are there?",
    "What is the longest river in the world?",
    "Who wrote Romeo and Juliet?",
    "Who painted the Mona Lisa?",
    "What is the boiling point of water in Celsius?",
    "How many days are there in a leap year?",
    "What is the chemical symbol for gold?",
    "Which planet is known as the Red Planet?",
    "What is the tallest mountain on Earth?",
    "What language is spoken in Brazil?",
    "How many legs does a spider have?",
    "What is the smallest prime number?",
    "Which ocean is the largest?",
    "What gas do plants take in from the air?",
    "Who was the first person to walk on the Moon?",
    "What is the freezing point of water in Fahrenheit?",
    "How many hours are there in a week?",
    "What is the currency of the United Kingdom?",
    "Which animal is the largest mammal?",
    "What is the hardest natural substance?",
    "In which country are the pyramids of Giza?",
    "How many strings does a standard guitar have?",
    "What is the main ingredient of guacamole?",
    "Which organ pumps blood through the body?",
    "What is the speed of light, roughly?",
    "What is the capital of Canada?",
    "How many players are on a soccer team on the field?",
    # definitions and explanations
    "What is photosynthesis?",
    "What is gravity?",
    "What does a noun mean in grammar?",
    "What is an atom?",
    "What is democracy?",
    "What is a computer algorithm?",
    "What is inflation in economics?",
    "What is the difference between weather and climate?",
    "What is a volcano?",
    "What is machine learning?",
    "What is a metaphor?",
    "What does DNA stand for?",
    "What is the internet?",
    "Why is the sky blue?",
    "Why do leaves change color in autumn?",
    "What causes the seasons on Earth?",
    "What is a black hole?",
    "What is renewable energy?",
    "What is the water cycle?",
    "What is a prime number?",
    "What is an ecosystem?",
    "What does a dictionary contain?",
    "What is a haiku?",
    "What is the purpose of a vaccine?",
    "What is an adjective?",
    "Explain what a rainbow is.",
    "Explain what an eclipse is.",
    "What is a fraction?",
    "What is the difference between a virus and a bacterium?",
    "What is a programming language?",
    # how-to
    "How do I boil an egg?",
    "How can I improve my sleep?",
    "How do I make a cup of tea?",
    "How can I learn a new language faster?",
    "How do I plant a tree?",
    "How can I save money each month?",
    "How do I write a good email?",
    "How can I stay focused while studying?",
    "How do I tie a shoelace?",
    "How can I reduce stress?",
    "How do I start running as a beginner?",
    "How do I make a simple salad?",
    "How can I be more productive at work?",
    "How do I take care of a houseplant?",
    "How do I prepare for a job interview?",
    "How can I keep my phone battery healthy?",
    "How do I clean a wooden table?",
    "How can I remember names better?",
    "How do I write a short story?",
    "How do I make pancakes?",
    "Give me three tips for public speaking.",
    "Give me a tip for drinking more water.",
    "What should I pack for a day at the beach?",
    "What is a good way to start learning to code?",
    "What are some healthy breakfast ideas?",
    # arithmetic and reasoning
    "What is 7 plus 5?",
    "What is 12 times 3?",
    "What is 100 minus 37?",
    "What is 81 divided by 9?",
    "What is half of 50?",
    "What is 15 percent of 200?",
    "What is the square root of 64?",
    "What is 2 to the power of 5?",
    "If I have 3 apples and eat one, how many are left?",
    "What is 9 times 9?",
    "How many minutes are there in two hours?",
    "What is 1000 divided by 4?",
    "Is 17 a prime number?",
    "What comes next: 2, 4, 6, 8?",
    "Which is bigger, 0.5 or 0.25?",
    "What is 6 plus 7 times 2?",
    "How many seconds are in a minute?",
    "If a train travels 60 km in one hour, how far does it go in three hours?",
    "What is 25 plus 25?",
    "What is the sum of the angles in a triangle?",
    # small talk
    "Hello!",
    "Hi, how are you?",
    "Good morning!",
    "What is your name?",
    "Who are you?",
    "Can you help me?",
    "Thank you!",
    "Tell me a joke.",
    "What can you do?",
    "Tell me something interesting.",
    "What is your favorite color?",
    "Do you like music?",
    "I am bored. Any ideas?",
    "Goodbye!",
    "Can you tell me a fun fact?",
    "What should I cook for dinner tonight?",
    "Recommend a good book.",
    "What is a nice hobby to pick up?",
    "How was your day?",
    "Say something kind.",
    # writing and language
    "Write a sentence using the word 'happy'.",
    "What is the opposite of 'cold'?",
    "What is a synonym for 'big'?",
    "Write a short poem about the sea.",
    "Summarize the story of Cinderella in one sentence.",
    "Translate 'thank you' into Spanish.",
    "What is the plural of 'mouse'?",
    "Write a haiku about autumn.",
    "Give me a word that rhymes with 'cat'.",
    "How do you spell 'necessary'?",
    "Write a one-line slogan for a bakery.",
    "Describe a sunset in one sentence.",
    "What is the past tense of 'run'?",
    "Correct this sentence: 'She go to school every day.'",
    "Write a birthday message for a friend.",
    # everyday knowledge
    "Why do we need to sleep?",
    "Why is exercise good for you?",
    "What are the primary colors?",
    "What do bees make?",
    "Why do cats purr?",
    "What is the difference between a fruit and a vegetable?",
    "Why should we recycle?",
    "What are the three states of matter?",
    "How does a compass work?",
    "What is the healthiest way to cook vegetables?",
    "What are the benefits of reading?",
    "Why do we have time zones?",
    "What is the role of the heart?",
    "What do pandas eat?",
    "What makes a good friend?",
)


def finished_answer(text: str, hit_limit: bool) -> str | None:
    """The reply as a training answer. A reply cut by the token limit is trimmed to its last full
    sentence (or dropped): training on it plus an end-of-turn token would teach the model to stop
    mid-sentence."""
    text = text.strip()
    if not hit_limit:
        return text or None
    ends = [m.end() for m in re.finditer(r"[.!?](\s|$)", text)]
    return text[: ends[-1]].strip() if ends else None


@torch.no_grad()
def distill_answers(
    model, questions=CHAT_QUESTIONS, max_new_tokens: int = 48, batch_size: int = 16
) -> list[dict]:
    """The model's own greedy answer to each question: [{"question", "answer"}], unusable ones dropped.

    Questions go in left-padded batches: decoding one token costs about the same for 1 row or 16.
    """
    was_training = model.training
    model.eval()
    tok, eos = model.tokenizer, set(model.default_eos())
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    pairs = []
    for start in range(0, len(questions), batch_size):
        chunk = questions[start : start + batch_size]
        prompts = [model.build_prompt([{"role": "user", "content": q}])[0] for q in chunk]
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        device = next(model.parameters()).device
        new = model.generate(input_ids.to(device), mask.to(device), max_new_tokens=max_new_tokens)
        for question, row in zip(chunk, new.tolist()):
            end = next((i for i, t in enumerate(row) if t in eos), None)
            text = tok.decode(row[:end], skip_special_tokens=True)
            answer = finished_answer(text, hit_limit=end is None)
            if answer:
                pairs.append({"question": question, "answer": answer})
    model.train(was_training)
    return pairs


def chat_turns(model, path: str | Path, questions=CHAT_QUESTIONS, max_new_tokens: int = 48) -> list[dict]:
    """The cached chat turns at `path`, distilled from `model` first when the file is missing.

    Call it before the model changes (LoRA weights loaded, training started): the answers must be
    the frozen LM's own.
    """
    path = Path(path)
    if path.is_file():
        return json.loads(path.read_text())["turns"]
    log.info("distilling %d chat answers from the frozen LM into %s", len(questions), path)
    turns = distill_answers(model, questions, max_new_tokens)
    if not turns:
        raise RuntimeError("the model gave no usable chat answer to distill")
    log.info("kept %d of %d answers (the rest were cut mid-sentence)", len(turns), len(questions))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"max_new_tokens": max_new_tokens, "turns": turns}, indent=1) + "\n")
    os.replace(tmp, path)
    return turns
