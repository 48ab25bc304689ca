"""The keel example voice bot: a FastAPI service that answers questions about the (invented)
Riverton Transit from a bundled folder of documents, streams the answer token by token over
server-sent events, cites its passages, remembers the conversation in encrypted memory, and
speaks each sentence (espeak-ng) while the next one is still being written.

Run it with ``make demo``; see README.md beside this file.
"""
