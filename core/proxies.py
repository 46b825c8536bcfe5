"""The proxy and CA-bundle environment for one storage endpoint, read once.

The `requests` sessions inside the Azure and IBM SDKs re-read it on every call by default:
they scan every environment variable for ``*_proxy`` (twice) and look for a ``~/.netrc``,
about 0.25 ms per call with 35 variables and 0.75 ms with 100 more (a Functions host sets
~130), on each of the several storage calls an event costs. Those platforms build their
clients with what `endpoint_environment` returns, once per container, and tell the session
not to look again. ``HTTP(S)_PROXY``/``NO_PROXY`` (for that endpoint) and
``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` keep their meaning.

`requests` is imported only when this is called: it comes with those SDKs, not with core.
"""

from __future__ import annotations

import os
from typing import Mapping, NamedTuple


class EndpointEnvironment(NamedTuple):
    proxies: dict[str, str]  # scheme -> proxy URL; {} when NO_PROXY covers the endpoint or none is set
    ca_bundle: str | None


def endpoint_environment(url: str, env: Mapping[str, str] | None = None) -> EndpointEnvironment:
    """What the environment says about reaching `url`. The proxies are read from
    ``os.environ`` (where `requests` reads them); `env` (default ``os.environ``) gives the
    CA-bundle settings."""
    from requests.utils import get_environ_proxies

    env = os.environ if env is None else env
    # urllib's "no" entry (NO_PROXY) is spent here, on this endpoint
    proxies = {scheme: proxy for scheme, proxy in get_environ_proxies(url).items() if scheme != "no"}
    return EndpointEnvironment(proxies, env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or None)
