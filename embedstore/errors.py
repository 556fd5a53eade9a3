"""One exception family for errors a user can cause (bad path, option, file); the CLI prints them in one line."""


class EmbedstoreError(Exception):
    """A user-facing error whose message names the file, sample or option at fault."""
