"""The restore pipeline: read -> detect -> select -> align -> pair -> restore -> paste -> write."""
