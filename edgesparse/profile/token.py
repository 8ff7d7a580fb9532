"""The one reader of the agent's bearer-token file, for the agent, the client and the CLI alike.

The rules are ssh's for a private key: the file must not be readable (or writable) by group or
others, and the token must be long enough not to be guessed. Standard library only (agent-safe).
"""
from __future__ import annotations

import os
import stat

from edgesparse.errors import UserError

MIN_TOKEN_LENGTH = 16
MAKE_TOKEN = 'python -c "import secrets; print(secrets.token_urlsafe(32))" > {path} && chmod 600 {path}'


def read_token(path) -> str:
    """The token in `path`, whitespace stripped; UserError if missing, too open or too short."""
    path = os.path.expanduser(os.fspath(path))
    try:
        # One open, then fstat on it: the mode checked is that of the file actually read.
        with open(path, encoding="utf-8") as f:
            mode = os.fstat(f.fileno()).st_mode
            if os.name == "posix" and mode & 0o077:
                raise UserError(f"token file {path} is accessible by group or others (mode "
                                f"{stat.S_IMODE(mode):04o}); a token others can read is no "
                                f"secret: run `chmod 600 {path}`")
            token = f.read().strip()
    except IsADirectoryError:
        raise UserError(f"token file {path} is a folder; give the token file itself (one line, "
                        "chmod 600), not the folder it is in") from None
    except OSError as exc:
        # The same file serves the agent and its clients: "the one the agent was started with".
        raise UserError(f"cannot read token file {path} ({exc.strerror}); give the file the "
                        f"agent was started with, or create one: {MAKE_TOKEN.format(path=path)}"
                        ) from None
    except UnicodeDecodeError:
        raise UserError(f"token file {path} is not text; create one: "
                        f"{MAKE_TOKEN.format(path=path)}") from None
    if len(token) < MIN_TOKEN_LENGTH:
        raise UserError(f"token in {path} is shorter than {MIN_TOKEN_LENGTH} characters; use a "
                        f"random one: {MAKE_TOKEN.format(path=path)}")
    return token
