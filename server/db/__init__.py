"""The run database: tables, the writer, migrations, and the typed reads the dashboard serves."""
