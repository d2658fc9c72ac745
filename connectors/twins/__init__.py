"""Twin entities as the unit of circulation: 3D city models (CityJSON), pipe networks, entity
profiles (实体画像) and cross-source linking, all computed at the provider's connector.

Pure functions over files and Arrow tables; publishing goes through ``connectors.publish``.
"""
