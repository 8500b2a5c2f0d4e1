"""Ways into Handoff from the tools scrapers already use (a Scrapy item pipeline)."""
