"""Sharing a person between partners, by their home partner: links to other partners' ids, the alliance id.

Each partner writes only into its own users; the same id sent by two partners is two people.
A person is shared only through a link they consented to (data sharing), made here by their
home partner or when another partner sends the alliance id the home partner registered.
"""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.models import EndUser, UserLink

from ..services.identity import user_alliance_id_set, user_link_create, user_link_delete
from .schema import BODY_ERRORS, error_responses

ID_LENGTH = EndUser.EXTERNAL_ID_MAX_LENGTH


class UserLinkCreateApi(APIView):
    """Link one of the calling partner's users to another partner's id for the same person."""

    class InputSerializer(serializers.Serializer):
        partner = serializers.SlugField(max_length=64, help_text="Slug of the other partner.")
        partner_user_id = serializers.CharField(
            max_length=ID_LENGTH, trim_whitespace=False, help_text="The other partner's pseudonymous id for the user."
        )

    class OutputSerializer(serializers.Serializer):
        user_id = serializers.CharField(help_text="Your id for the user.")
        partner = serializers.CharField(source="link.partner.slug")
        partner_user_id = serializers.CharField(source="link.external_id")
        via = serializers.ChoiceField(choices=UserLink.Via.choices, source="link.via")
        linked_at = serializers.DateTimeField(source="link.created_at")

    @extend_schema(
        operation_id="user_link_create",
        summary="Link a user to another partner's id for them",
        description=(
            "Only the user's home partner may link them, and only while they consent to data sharing (409 "
            "`no_data_sharing_consent` otherwise). From then on the other partner's events and requests for "
            "`partner_user_id` reach this user. 404 `unknown_partner` for a partner that does not exist, 422 "
            "`self_link` for your own slug; 409 `already_linked` when the user is already linked to that partner or "
            "that partner's id is linked to someone else, 409 `partner_user_exists` when that partner already has "
            "a user of its own with that id, 409 `erased` when that id was erased. Another partner's user is a 404."
        ),
        tags=["users"],
        request=InputSerializer,
        responses={201: OutputSerializer, **error_responses(*BODY_ERRORS, 404, 409, 422)},
        examples=[
            OpenApiExample(
                "Link to a video platform's id",
                request_only=True,
                value={"partner": "lanying", "partner_user_id": "ly-88123"},
            )
        ],
    )
    def post(self, request, user_id: str):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        link = user_link_create(
            partner=request.user,
            user_id=user_id,
            other_partner=serializer.validated_data["partner"],
            other_user_id=serializer.validated_data["partner_user_id"],
        )
        return Response(self.OutputSerializer({"user_id": user_id, "link": link}).data, status=status.HTTP_201_CREATED)


class UserLinkDeleteApi(APIView):
    """Remove the link between one of the calling partner's users and another partner."""

    @extend_schema(
        operation_id="user_link_delete",
        summary="Remove a user's link to another partner",
        description=(
            "Only the user's home partner may. The other partner's later events for its id go to a user of its own; "
            "the events it sent while linked stay with the person (the other partner can erase them with its own "
            "`DELETE users/{user_id}/`). A user or partner without such a link is a 404."
        ),
        tags=["users"],
        responses={204: None, **error_responses(404)},
    )
    def delete(self, request, user_id: str, partner: str):
        user_link_delete(partner=request.user, user_id=user_id, other_partner=partner)
        return Response(status=status.HTTP_204_NO_CONTENT)


class UserAllianceIdApi(APIView):
    """Register the pseudonymous alliance id of one of the calling partner's users."""

    class InputSerializer(serializers.Serializer):
        alliance_id = serializers.CharField(
            max_length=ID_LENGTH,
            trim_whitespace=False,
            allow_null=True,
            help_text="The alliance-wide pseudonymous id; null clears it.",
        )

    class OutputSerializer(serializers.Serializer):
        user_id = serializers.CharField()
        alliance_id = serializers.CharField(allow_null=True)

    @extend_schema(
        operation_id="user_alliance_id_set",
        summary="Register a user's alliance id",
        description=(
            "Only the user's home partner may, and only while the user consents to data sharing (409 "
            "`no_data_sharing_consent` otherwise). Another partner that then sends this id as a user id, and has "
            "no user of its own with it, is linked to this user. 409 `alliance_id_taken` when another user has it."
        ),
        tags=["users"],
        request=InputSerializer,
        responses={200: OutputSerializer, **error_responses(*BODY_ERRORS, 404, 409)},
        examples=[OpenApiExample("Register", request_only=True, value={"alliance_id": "a-5f2c9e01"})],
    )
    def put(self, request, user_id: str):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = user_alliance_id_set(
            partner=request.user, user_id=user_id, alliance_id=serializer.validated_data["alliance_id"]
        )
        return Response(self.OutputSerializer({"user_id": user_id, "alliance_id": user.alliance_id}).data)
