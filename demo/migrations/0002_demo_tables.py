# The demo models' tables take this app's names: analytics_demoworld -> demo_demoworld and
# analytics_planteduser -> demo_planteduser (a rename; the rows stay).

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('demo', '0001_initial'),
    ]

    operations = [
        migrations.AlterModelTable(name='demoworld', table=None),
        migrations.AlterModelTable(name='planteduser', table=None),
    ]
