"""Routers, one module per resource, gathered here."""

from fastapi import APIRouter

from . import colorize, health, jobs, videos

api_router = APIRouter()
api_router.include_router(colorize.router)
api_router.include_router(videos.router)
api_router.include_router(jobs.router)
api_router.include_router(health.router)
