"""Model definition: configuration, weights, reference math. numpy only, no ROS."""
