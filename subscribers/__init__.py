"""Lists, subscribers, consent records, CSV import/export and suppressions."""
