"""Routing data: datasets, prompt text, prices, loaders and the JSONL record format."""

from routeiq.data.dataset import DataError, RoutingDataset
from routeiq.data.loaders import (
    DEFAULT_OUTPUT_TOKENS,
    load_dataset,
    load_llmrouter,
    load_routerbench,
)
from routeiq.data.prices import Price, PriceTable, estimate_tokens, litellm_price
from routeiq.data.prompts import Prompt, PromptError, prompt_text
from routeiq.data.records import (
    Outcome,
    RecordCandidate,
    RecordDecision,
    RouteRecord,
    dataset_to_records,
    load_records,
    merge_records,
    read_records,
    records_to_dataset,
    write_records,
)

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "DataError",
    "Outcome",
    "Price",
    "PriceTable",
    "Prompt",
    "PromptError",
    "RecordCandidate",
    "RecordDecision",
    "RouteRecord",
    "RoutingDataset",
    "dataset_to_records",
    "estimate_tokens",
    "litellm_price",
    "load_dataset",
    "load_llmrouter",
    "load_records",
    "load_routerbench",
    "merge_records",
    "prompt_text",
    "read_records",
    "records_to_dataset",
    "write_records",
]
