"""The connection to the API: its URL and key (sidebar), the health answer reused for a while, the served
models and the sidebar's model choice, and the sample download cached per API."""

from __future__ import annotations

import os
import time
from pathlib import Path

import streamlit as st

from brats_app.registry import REGISTRY
from streamlit_app.api_client import ApiClient, ApiError, default_api_url

#: Seconds a health answer is reused before the API is asked again.
HEALTH_TTL_S = 30.0
state = st.session_state


def api_identity() -> tuple[str, str]:
    return state.api_url.strip().rstrip("/"), state.api_key


def api_client() -> ApiClient:
    url, key = api_identity()
    return ApiClient(url, key or None)


@st.cache_resource(show_spinner=False, max_entries=4, ttl=3600)
def fetch_sample(api_url: str, api_key: str) -> bytes:
    """The sample zip of the API at ``api_url``, downloaded once per URL and key (failures are not cached).

    A resource cache: the immutable bytes are shared as they are, not pickled and copied on every hit.
    """
    return ApiClient(api_url, api_key or None).download_sample()


def _forget_health() -> None:
    state.pop("health", None)


def check_health() -> tuple[dict | None, str | None]:
    """(health answer, None) or (None, error message), reused for :data:`HEALTH_TTL_S` seconds."""
    cache = state.setdefault("health", {})
    key = api_identity()
    entry = cache.get(key)
    if entry is None or time.monotonic() - entry[0] > HEALTH_TTL_S:
        try:
            entry = (time.monotonic(), api_client().health(), None)
        except ApiError as exc:
            entry = (time.monotonic(), None, str(exc))
        cache[key] = entry
    return entry[1], entry[2]


def display_name(model: str) -> str:
    """``U-Net + SSPP``: the name of a model in tables and captions."""
    return REGISTRY[model].display if model in REGISTRY else model


def model_name(model: str) -> str:
    """``U-Net + SSPP (sspp)``: the display name of a model the API serves, and its API name."""
    return f"{display_name(model)} ({model})" if model in REGISTRY else model


def chosen_models() -> list[str | None]:
    """The models chosen in the sidebar, in the API's order; ``[None]`` (the API's default) when it serves one."""
    health, _ = check_health()
    served = list((health or {}).get("models") or [])
    if len(served) < 2:
        return [None]
    picked = set(state.get("models") or [])
    return [m for m in served if m in picked] or [health.get("model") or served[0]]



def sidebar() -> None:
    """API URL and key, the health answer (or why the API is not available), and the model choice."""
    with st.sidebar:
        st.header("API")
        st.text_input("API URL", value=default_api_url(), key="api_url")
        st.text_input(
            "API key",
            value=os.environ.get("BRATS_API_KEY", ""),
            type="password",
            key="api_key",
            help="Sent as the X-API-Key header; leave empty when the API needs none.",
        )
        health, error = check_health()
        if health is not None:
            served = ", ".join(f"**{m}**" for m in health.get("models") or [health.get("model", "?")])
            default = f" (default **{health.get('model', '?')}**)" if "," in served else ""
            what = f"models {served}{default}" if default else f"model **{health.get('model', '?')}**"
            st.success(f"API reachable: {what} on **{health.get('device', '?')}**")
            st.caption(
                f"Checkpoint `{Path(str(health.get('checkpoint', '?'))).name}`, "
                f"version {health.get('version', '?')}, status {health.get('status', '?')}"
            )
            models = list(health.get("models") or [])
            if len(models) > 1:
                default = health["model"] if health.get("model") in models else models[0]
                st.multiselect(
                    "Models", models, default=[default], format_func=model_name, key="models",
                    help="The models this API serves. Pick several to compare them side by side on your case.",
                )  # fmt: skip
            st.toggle(
                "Test-time flips", key="tta",
                help="The deep models predict the case three times (as it is, flipped left-right and front-back) "
                     "and average: about 2.5x the model time. In the 5-fold CV of the served U-Net + SSPP, about "
                     "+0.003 Dice per region. Models without flips answer with an error.",
            )  # fmt: skip
        else:
            st.error(f"API not available. {error}")
        st.button("Check the API again", key="recheck", on_click=_forget_health)
