"""PostgreSQL: migrations, the routing plan store, customer import and demo data."""
