# Takes over DemoWorld and PlantedUser from analytics (analytics 0009 drops them from its state):
# the models enter this app's state on their existing tables, without a database operation, so
# a database that already holds demo worlds keeps them. 0002 then renames the tables.

import django.db.models.deletion
from django.db import migrations, models


def content_types_to_demo(apps, schema_editor):
    """Move the two models' content types (and so their permissions) from analytics to demo."""
    content_type = apps.get_model('contenttypes', 'ContentType')
    models_moved = ['demoworld', 'planteduser']
    if content_type.objects.filter(app_label='demo', model__in=models_moved).exists():
        return
    content_type.objects.filter(app_label='analytics', model__in=models_moved).update(app_label='demo')


def content_types_to_analytics(apps, schema_editor):
    content_type = apps.get_model('contenttypes', 'ContentType')
    content_type.objects.filter(app_label='demo', model__in=['demoworld', 'planteduser']).update(app_label='analytics')


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('analytics', '0009_demo_models_move_to_demo'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='DemoWorld',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('seed', models.BigIntegerField(verbose_name='seed')),
                        ('n_users', models.PositiveIntegerField(verbose_name='users')),
                        ('truth', models.JSONField(verbose_name='planted truth')),
                        ('catalog', models.JSONField(default=dict, verbose_name='catalog')),
                        ('loaded_at', models.DateTimeField(auto_now=True, verbose_name='loaded at')),
                    ],
                    options={
                        'verbose_name': 'demo world',
                        'verbose_name_plural': 'demo worlds',
                        'db_table': 'analytics_demoworld',
                        'constraints': [models.UniqueConstraint(fields=('seed', 'n_users'), name='demo_world_unique')],
                    },
                ),
                migrations.CreateModel(
                    name='PlantedUser',
                    fields=[
                        ('user', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True,
                                                      related_name='planted', serialize=False, to='analytics.enduser')),
                        ('segment', models.CharField(max_length=32, verbose_name='planted segment')),
                        ('top_category', models.CharField(max_length=32, verbose_name='planted favourite category')),
                        ('purchase_probability', models.FloatField(verbose_name='true propensity')),
                    ],
                    options={
                        'verbose_name': 'planted user truth',
                        'verbose_name_plural': 'planted user truth',
                        'db_table': 'analytics_planteduser',
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_types_to_demo, content_types_to_analytics, elidable=True),
    ]
