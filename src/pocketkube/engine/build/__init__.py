"""`docker build` for the engine: a Dockerfile and a build context turned into an image, BuildKit style.

parse (Dockerfile text → stages of instructions) → plan (expansion, ARG scoping, image config, stage graph,
only what the target needs) → executor (stages concurrently; each step reused from the build cache or run:
RUN in a real container on the parent's layers, COPY/ADD/WORKDIR as file operations) → one gzip layer per
filesystem change → an image in the store, tagged only when everything succeeded."""
