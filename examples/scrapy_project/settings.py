"""Settings of the example project: the Handoff pipeline, and where it hands items off.

Over the HTTP API (a token of scope `ingest` from `handoff tokens create --scope ingest`):
    HANDOFF_URL=http://127.0.0.1:8000 HANDOFF_TOKEN=... scrapy crawl pages -a start_url=...
or directly to the database:
    HANDOFF_DATABASE_URL=postgresql://... scrapy crawl pages -a start_url=...
"""

import os

BOT_NAME = "pages"
SPIDER_MODULES = ["spiders"]
NEWSPIDER_MODULE = "spiders"

ITEM_PIPELINES = {"app.integrations.scrapy.HandoffPipeline": 300}
HANDOFF_URL = os.environ.get("HANDOFF_URL")
HANDOFF_TOKEN = os.environ.get("HANDOFF_TOKEN")
HANDOFF_DATABASE_URL = None if HANDOFF_URL else os.environ.get("HANDOFF_DATABASE_URL")
HANDOFF_BATCH_SIZE = 50

ROBOTSTXT_OBEY = True
CONCURRENT_REQUESTS_PER_DOMAIN = 4
AUTOTHROTTLE_ENABLED = True
