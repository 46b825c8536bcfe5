"""A stand-in for DT Cloud's Data Connector: builds, signs and delivers events like DT does."""
