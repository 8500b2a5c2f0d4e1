"""Crawl a site from `start_url`, staying on its host, and hand every HTML page off."""

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import scrapy
from scrapy.http import Response
from scrapy.linkextractors import LinkExtractor

from app.integrations.scrapy import handoff_item


class PagesSpider(scrapy.Spider):
    name = "pages"

    def __init__(self, start_url: str = "", max_pages: str = "100", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not start_url:
            raise ValueError("give the start page: scrapy crawl pages -a start_url=URL")
        self.start_urls = [start_url]
        self.allowed_domains = [urlsplit(start_url).hostname or ""]
        self.links = LinkExtractor()  # http(s) links; the offsite middleware keeps the host
        self.custom_max = int(max_pages)
        self.seen = 0

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        if not response.headers.get("Content-Type", b"").startswith(b"text/html"):
            return
        self.seen += 1
        yield handoff_item(response)  # url, status, headers, content type, body
        if self.seen < self.custom_max:
            yield from response.follow_all(self.links.extract_links(response), callback=self.parse)
