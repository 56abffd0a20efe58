"""Training: the loop and its losses (:mod:`.loop`), the toy stacks (:mod:`.toy`) and the CamVid stack (:mod:`.camvid`).

Every stack is trained by this project's own code on the machine that runs it; the pipelines it
writes are loaded with :func:`scp_core.pipeline.load_pipeline`.
"""
