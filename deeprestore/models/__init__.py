"""The networks: the DIP "skip" encoder-decoder (``skip``) and the same network for several
independent runs or problems as one grouped network (``batched``). Nothing here knows of tasks."""
