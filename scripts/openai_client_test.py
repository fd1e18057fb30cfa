"""`lowbit serve` with OpenAI's own Python client (the `openai` package): chat and completions, whole and
streamed, on SmolLM2; the streamed greedy answers join into the whole ones, and errors arrive as the client's
typed exceptions. Usage: python openai_client_test.py LOWBIT_BINARY MODEL (scripts/test.sh runs it)."""

import subprocess
import sys

import openai
from openai import OpenAI

NAME = "smollm2"


def main(lowbit: str, model: str) -> None:
    server = subprocess.Popen(
        [lowbit, "-t", "2", "serve", model, "--port", "0", "--name", NAME],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base = server.stdout.readline().strip()
        assert base.startswith("http://"), f"the server did not start: {base!r}"
        client = OpenAI(base_url=base + "/v1", api_key="not-checked", max_retries=0)
        assert [m.id for m in client.models.list()] == [NAME]

        question = [{"role": "user", "content": "What is the capital of France?"}]
        chat = client.chat.completions.create(model=NAME, messages=question, max_tokens=16, temperature=0)
        answer = chat.choices[0].message.content
        assert answer and chat.choices[0].finish_reason in ("stop", "length"), chat
        assert chat.usage.completion_tokens <= 16 and chat.usage.prompt_tokens > 0, chat.usage
        chunks = list(
            client.chat.completions.create(
                model=NAME,
                messages=question,
                max_tokens=16,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == answer, (streamed, answer)
        assert chunks[-1].usage.total_tokens == chat.usage.total_tokens, chunks[-1]

        prompt = "The capital of France is"
        whole = client.completions.create(model=NAME, prompt=prompt, max_tokens=6, temperature=0)
        text = whole.choices[0].text
        assert text.startswith(" Paris"), text
        stream = client.completions.create(model=NAME, prompt=prompt, max_tokens=6, temperature=0, stream=True)
        assert "".join(c.choices[0].text for c in stream) == text

        sampled = client.completions.create(model=NAME, prompt=prompt, max_tokens=8, temperature=0.8, seed=7)
        again = client.completions.create(model=NAME, prompt=prompt, max_tokens=8, temperature=0.8, seed=7)
        assert sampled.choices[0].text == again.choices[0].text, "a seed reproduces its draw"

        try:
            client.chat.completions.create(model="gpt-4o", messages=question)
            raise AssertionError("an unknown model was served")
        except openai.NotFoundError as e:
            assert e.body["code"] == "model_not_found", e.body
        try:
            client.completions.create(model=NAME, prompt=prompt, temperature=5)
            raise AssertionError("temperature 5 was accepted")
        except openai.BadRequestError as e:
            assert e.body["param"] == "temperature", e.body
        print(f"openai {openai.__version__} client against lowbit serve: chat and completions, whole and streamed: ok")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
