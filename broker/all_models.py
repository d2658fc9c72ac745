"""Import every feature's tables so SQLModel.metadata (and Alembic) sees them. One line per feature."""

from broker.identity import models as _identity  # noqa: F401
from broker.audit import models as _audit  # noqa: F401
from broker.catalog import models as _catalog  # noqa: F401
from broker.policy import models as _policy  # noqa: F401
from broker.privacy import models as _privacy  # noqa: F401
from broker.contracts import models as _contracts  # noqa: F401
from broker.transfer import models as _transfer  # noqa: F401
