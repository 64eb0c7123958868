"""`--explainer openai`: an LLM explainer (and detection/fuzzing scorers) on an OpenAI-compatible endpoint.

`app.explain.runner` imports this module when asked for the explainer 'openai'; it registers the factory.
Options (from the CLI): endpoint (base URL), model, api_key_env (the environment variable holding the key),
concurrency (requests in flight), timeout (seconds per request), retries.
"""

from __future__ import annotations

from typing import Any

from app.explain.chat import OpenAIChat
from app.explain.examples import ExampleSource
from app.explain.llm import LLMExplainer, with_scorers
from app.explain.runner import register_explainer


def make(source: ExampleSource, endpoint: str | None = None, model: str | None = None, **options: Any
         ) -> LLMExplainer:
    """The explainer for `--explainer openai` (ValueError naming the missing option)."""
    if not endpoint:
        raise ValueError("--explainer openai needs --endpoint URL (e.g. http://127.0.0.1:8080/v1)")
    if not model:
        raise ValueError("--explainer openai needs --explainer-model NAME (the model name the endpoint serves)")
    keys = ("api_key_env", "concurrency", "timeout", "retries")
    chat = OpenAIChat(endpoint, model, **{k: options[k] for k in keys if options.get(k) is not None})
    return with_scorers(LLMExplainer(chat))


register_explainer("openai", make)
