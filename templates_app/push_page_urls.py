urlpatterns = []  # dashboard pages: filled in by the dashboard work
