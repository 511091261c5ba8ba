"""shoal: stateful stream processing on asyncio."""
