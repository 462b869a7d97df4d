"""The PostgreSQL event store (``store``): binary COPY into ``discussion_event``, trend inputs by SQL."""
