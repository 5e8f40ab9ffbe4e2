# DemoWorld and PlantedUser now belong to the demo app (demo/migrations/0001_initial.py takes
# them over). Only Django's state changes here: the tables and their rows stay as they are.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('analytics', '0008_event_fk_indexes_covered'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='PlantedUser'),
                migrations.DeleteModel(name='DemoWorld'),
            ],
            database_operations=[],
        ),
    ]
