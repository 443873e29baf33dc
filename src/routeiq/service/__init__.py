"""The routing service: the serving engine behind HTTP, for many gateway replicas.

    routeiq serve --config proxy_config.yaml --port 8080 --workers 4   # the service
    routeiq_settings: {service: {urls: [http://routeiq:8080]}}        # the gateway side

The service (:mod:`routeiq.service.app`) and the LiteLLM strategy's client
(:class:`routeiq.integrations.litellm.remote.RemoteEngine`) run the same
:class:`routeiq.serving.DecisionEngine`, so a decision is the same wherever it is made.
Nothing here imports FastAPI, uvicorn or aiohttp at package import: the settings module is
read by every gateway.
"""

from routeiq.service.settings import ServiceBreakerSettings, ServiceClientSettings

__all__ = ["ServiceBreakerSettings", "ServiceClientSettings"]
