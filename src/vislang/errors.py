"""vislang's own exceptions: every refusal names what was wrong and what to do."""


class VislangError(Exception):
    """Base class of every error vislang raises on purpose."""


class ImageError(VislangError, ValueError):
    """An image could not be read: corrupt, truncated, not an image, or of an unknown kind."""


class ImageTooLargeError(ImageError):
    """An image over the pixel or byte limit, refused before it is decoded."""


class UnsupportedModelError(VislangError, ValueError):
    """A checkpoint whose model_type vislang does not implement."""


class CheckpointError(VislangError, ValueError):
    """A checkpoint folder that is missing files, or whose weights do not match its config."""


class ImageTokenMismatchError(VislangError, ValueError):
    """The prompt's image placeholders do not match the number of image features."""


class PromptTooLongError(VislangError, ValueError):
    """A prompt longer than the model's context. The numbers, where known, let a server answer in
    OpenAI's words: the context, the prompt's tokens and the completion tokens asked for."""

    def __init__(self, message: str, context: int = 0, prompt_tokens: int = 0, completion_tokens: int = 0):
        super().__init__(message)
        self.context, self.prompt_tokens, self.completion_tokens = context, prompt_tokens, completion_tokens
